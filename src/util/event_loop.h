// Runs the server's libuv loop, optionally busy-polling for a short while after I/O before it
// sleeps (`serve --busy-poll-us`).
//
// Why: on a virtual machine a wake-up that crosses CPUs is expensive (on the 2-vCPU development
// VM, a host <-> agent round trip took 18 µs with both on one CPU and 120 µs unpinned). An execute
// costs the loop two wake-ups of its own: the agent's reply and the client's next request. A loop
// that is still polling when they arrive needs neither.
#pragma once

#include <uv.h>

#include <cstdint>

namespace sp {

struct BusyPollStats {
  uint64_t hits = 0;     // events found while polling: wake-ups the loop did not need
  uint64_t spin_ns = 0;  // time spent polling without finding I/O (the CPU the option costs, at most)
};

// Runs `loop` until no active handle or request is left, as uv_run(UV_RUN_DEFAULT) does. With
// busy_poll_ns > 0, after each turn that blocked the loop keeps polling for new events, without
// blocking, until busy_poll_ns have passed with nothing found, giving the CPU to any other
// runnable thread between polls (sched_yield), so it only takes time no one else wants. Timers
// due meanwhile run at once.
void run_loop(uv_loop_t* loop, uint64_t busy_poll_ns, BusyPollStats* stats);

}  // namespace sp
