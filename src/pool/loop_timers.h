// LoopTimers: one TimerWheel driven by one uv_timer_t set to the wheel's next deadline (DESIGN.md §3);
// the only clock the session machinery uses. Loop thread only.
#pragma once

#include <uv.h>

#include "pool/timer_wheel.h"

namespace sp::pool {

class LoopTimers {
 public:
  explicit LoopTimers(uv_loop_t* loop);
  LoopTimers(const LoopTimers&) = delete;
  LoopTimers& operator=(const LoopTimers&) = delete;

  uint64_t now_ms() const { return uv_now(loop_); }
  void arm_in(TimerEntry* e, uint64_t delay_ms);
  void cancel(TimerEntry* e) { wheel_.cancel(e); }
  // Closes the uv timer; entries still armed never fire. The object may be destroyed after the
  // loop has run the close callback.
  void close();

 private:
  static void on_timer(uv_timer_t* t);
  void reschedule();
  uv_loop_t* loop_;
  TimerWheel wheel_;
  uv_timer_t timer_{};
  uint64_t scheduled_for_ = UINT64_MAX;
  bool closed_ = false;
};

}  // namespace sp::pool
