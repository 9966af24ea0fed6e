// TimerWheel: hierarchical timing wheel for cooldowns, lifetimes and execution timeouts
// (DESIGN.md §3); not a clock and not a libuv handle: time is passed in, in ms.
//
// Contract:
// - One thread (the loop thread) owns a wheel and every entry armed on it.
// - Entries are intrusive: a TimerEntry lives inside its owner (a session, a request),
//   the wheel never allocates and never owns them. An owner must cancel its entry (or
//   let it fire) before it is destroyed; ~TimerEntry does not unlink itself.
// - arm / re-arm / cancel are O(1). advance(now) fires every entry whose deadline is
//   <= now, in deadline order, each exactly once, calling its callback synchronously
//   from inside advance(). A callback may arm, re-arm or cancel any entry, its own
//   included. An entry armed with a deadline <= the wheel's time fires at the next
//   advance(), never within the current one (so a callback re-arming "now" cannot loop).
// - next_deadline() is a lower bound of the earliest deadline, exact when it is less
//   than 64 ms away; driving one uv_timer_t with it and calling advance() when it fires
//   is always correct (an early wake-up only moves entries to finer levels).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace sp {

struct TimerNode {
  TimerNode* prev = nullptr;
  TimerNode* next = nullptr;
};

class TimerWheel;

class TimerEntry {
 public:
  // Called from TimerWheel::advance with the time given to advance().
  using Callback = void (*)(TimerEntry* entry, uint64_t now_ms);

  explicit TimerEntry(Callback cb) : cb_(cb) {}
  TimerEntry(const TimerEntry&) = delete;
  TimerEntry& operator=(const TimerEntry&) = delete;

  bool armed() const { return where_ != kUnarmed; }
  uint64_t deadline_ms() const { return deadline_ms_; }

 private:
  friend class TimerWheel;
  static constexpr uint8_t kUnarmed = 0xFF, kDue = 0xFE, kFiring = 0xFD;
  TimerNode node_;  // first member: the wheel maps a node back to its entry
  Callback cb_;
  uint64_t deadline_ms_ = 0;
  uint8_t where_ = kUnarmed;  // level, or kDue / kFiring
  uint8_t slot_ = 0;
};

class TimerWheel {
 public:
  static constexpr int kBitsPerLevel = 6;
  static constexpr int kSlots = 1 << kBitsPerLevel;
  static constexpr int kLevels = 11;  // 66 bits: every uint64 deadline has a place

  explicit TimerWheel(uint64_t now_ms);
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;
  ~TimerWheel();  // disarms (does not fire) entries still armed

  // Arms `e` for the absolute time `deadline_ms`; re-arms it if it was armed.
  void arm(TimerEntry* e, uint64_t deadline_ms);
  // Arms `e` for `delay_ms` after the wheel's current time (the last advance()).
  void arm_in(TimerEntry* e, uint64_t delay_ms) { arm(e, now_ms_ + delay_ms); }
  // Disarms `e`; a no-op when it is not armed.
  void cancel(TimerEntry* e);

  // Moves the wheel's time to `now_ms` (earlier times are ignored) and fires what
  // expired. Returns the number of callbacks called.
  size_t advance(uint64_t now_ms);

  std::optional<uint64_t> next_deadline() const;
  uint64_t now_ms() const { return now_ms_; }
  size_t size() const { return size_; }

 private:
  static void push_back(TimerNode* head, TimerNode* n);
  static void unlink(TimerNode* n);
  static bool empty(const TimerNode* head) { return head->next == head; }

  void place(TimerEntry* e);  // deadline > now_ms_
  // The time at which the lowest occupied level needs attention, if any.
  std::optional<uint64_t> next_event() const;
  void take_slot(int level, int slot, TimerNode* firing);
  size_t fire_all(TimerNode* firing, uint64_t now_ms);

  uint64_t now_ms_;
  size_t size_ = 0;
  uint64_t occupied_[kLevels] = {};
  TimerNode slots_[kLevels][kSlots];
  TimerNode due_;
};

// The owner of an embedded entry: SP_TIMER_OWNER(entry, Session, cooldown_timer_).
#define SP_TIMER_OWNER(entry_ptr, Owner, member) \
  (reinterpret_cast<Owner*>(reinterpret_cast<char*>(entry_ptr) - offsetof(Owner, member)))

}  // namespace sp
