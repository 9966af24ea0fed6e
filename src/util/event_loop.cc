// run_loop: uv_run, or a loop of our own that polls the backend a while before sleeping.
#include "util/event_loop.h"

#include <poll.h>
#include <sched.h>

namespace sp {

void run_loop(uv_loop_t* loop, uint64_t busy_poll_ns, BusyPollStats* stats) {
  if (busy_poll_ns == 0) {
    uv_run(loop, UV_RUN_DEFAULT);
    return;
  }
  // Sleeping is left to libuv (UV_RUN_ONCE), which first registers the watchers that callbacks
  // started. While polling, each round is a UV_RUN_NOWAIT turn (due timers, those registrations,
  // epoll_wait with no timeout, callbacks). Whether it will find I/O is seen beforehand by peeking
  // at the backend (epoll) descriptor, readable while events are ready: libuv's watchers are
  // level-triggered, so the peek consumes nothing. Finding I/O extends the window.
  pollfd backend{uv_backend_fd(loop), POLLIN, 0};
  for (;;) {
    if (uv_run(loop, UV_RUN_ONCE) == 0) return;
    uint64_t now = uv_hrtime();
    uint64_t until = now + busy_poll_ns;
    while (now < until) {
      bool io = poll(&backend, 1, 0) > 0;
      if (uv_run(loop, UV_RUN_NOWAIT) == 0) return;
      uint64_t then = now;
      if (io) {
        ++stats->hits;
        now = uv_hrtime();
        until = now + busy_poll_ns;
      } else {
        sched_yield();  // a runnable thread on this CPU (an agent, the spawner) goes first
        now = uv_hrtime();
        stats->spin_ns += now - then;
      }
    }
  }
}

}  // namespace sp
