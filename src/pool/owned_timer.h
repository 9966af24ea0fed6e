// OwnedTimer<T>: a TimerEntry that knows its owner, so a callback finds the object it belongs to
// without offsetof (not allowed on non-standard-layout types).
#pragma once

#include "pool/timer_wheel.h"

namespace sp::pool {

template <class Owner>
class OwnedTimer : public TimerEntry {
 public:
  OwnedTimer(Callback cb, Owner* owner) : TimerEntry(cb), owner_(owner) {}
  // The owner of an entry that the caller armed as an OwnedTimer<Owner>.
  static Owner* owner_of(TimerEntry* e) { return static_cast<OwnedTimer*>(e)->owner_; }

 private:
  Owner* owner_;
};

}  // namespace sp::pool
