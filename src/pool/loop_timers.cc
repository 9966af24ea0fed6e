// LoopTimers: keeps the single uv_timer_t at the wheel's next deadline.
#include "pool/loop_timers.h"

namespace sp::pool {

LoopTimers::LoopTimers(uv_loop_t* loop) : loop_(loop), wheel_(uv_now(loop)) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));  // timers alone never keep the server running
}

void LoopTimers::arm_in(TimerEntry* e, uint64_t delay_ms) {
  // No advance() here: arm_in may be called from a firing callback, inside advance().
  wheel_.arm(e, now_ms() + delay_ms);
  reschedule();
}

void LoopTimers::reschedule() {
  if (closed_) return;
  auto next = wheel_.next_deadline();
  if (!next) {
    uv_timer_stop(&timer_);
    scheduled_for_ = UINT64_MAX;
    return;
  }
  if (*next == scheduled_for_ && uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_))) return;
  scheduled_for_ = *next;
  uint64_t now = now_ms();
  uv_timer_start(&timer_, on_timer, *next > now ? *next - now : 0, 0);
}

void LoopTimers::on_timer(uv_timer_t* t) {
  auto* self = static_cast<LoopTimers*>(t->data);
  self->scheduled_for_ = UINT64_MAX;
  self->wheel_.advance(self->now_ms());
  self->reschedule();
}

void LoopTimers::close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

}  // namespace sp::pool
