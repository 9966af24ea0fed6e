// Pool: one pool's sessions by identifier, its ready sandboxes (from a SandboxSource), allocation
// with a bounded wait, refill targets and metrics. Not the HTTP shapes (api/session_routes).
//
// Threading: loop thread only. acquire() may call its callback synchronously (known identifier,
// ready sandbox, pool full) or later (waiting for the next ready sandbox); exactly once either way.
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/protocol.h"
#include "pool/loop_timers.h"
#include "pool/owned_timer.h"
#include "pool/sandbox_source.h"
#include "pool/session.h"
#include "pool/settings.h"
#include "util/metrics.h"

namespace sp::pool {

struct AcquireError {
  int status = 503;
  const char* code = "ServiceUnavailable";
  std::string message;
  uint32_t retry_after_seconds = 0;  // 0: no Retry-After header

  // "Retry-After: N\r\n" for an answer's extra headers, or "" without one.
  std::string retry_after_header() const {
    return retry_after_seconds ? "Retry-After: " + std::to_string(retry_after_seconds) + "\r\n" : std::string();
  }
};

class Pool {
 public:
  using AcquireFn = std::function<void(Session* session, const AcquireError* error)>;

  // `offload` runs the source's blocking teardown (PoolManager's); it outlives the pool.
  Pool(uv_loop_t* loop, LoopTimers* timers, Offload* offload, PoolSettings settings, std::unique_ptr<SandboxSource> source);
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool();

  // The source's blocking start-up (SandboxSource::prepare): on an Offload thread, or on the loop
  // thread before the loop runs. Touches nothing else of the pool.
  Status prepare() { return source_->prepare(); }
  // After a successful prepare(), on the loop thread: starts producing and refilling.
  Status start();
  const PoolSettings& settings() const { return settings_; }
  // Settings that can change at run time (sizes, cooldown, limits); not the container type.
  void update_settings(const PoolSettings& s);
  LoopTimers& timers() { return *timers_; }
  // Custom-container pools: how sessions reach their containers; nullptr for code interpreters.
  ContainerAccess* containers() const { return source_->containers(); }
  bool is_container_pool() const { return source_->containers() != nullptr; }

  // The session of `identifier`, allocating one from the ready set when it is new.
  void acquire(const std::string& identifier, AcquireFn done);
  // The session of `identifier` if it exists (no allocation). Touches nothing.
  Session* find(const std::string& identifier);
  // acquire()'s answer when it is known at once and is a bound session: that session, touched.
  // Otherwise (new identifier, pool stopping) null: call acquire().
  Session* reuse(const std::string& identifier);
  // All sessions, oldest first (for listings).
  std::vector<Session*> sessions_by_age() const;
  size_t allocated() const { return sessions_.size(); }

  // Stops the pool: waiters get 503, sessions end, the source stops; `done` runs when all is gone
  // (the source's threads joined and its sandboxes reaped off the loop thread). Also valid for a
  // pool that was never started (after prepare(), failed or not).
  void stop(std::function<void()> done);

  // Every pool's metrics, one family after the other (Prometheus wants families contiguous).
  static void render_metrics(std::string& out, const std::vector<const Pool*>& pools);

  // Called by Session.
  void session_ended(Session* s, Sandbox&& sandbox);
  void count_expiry() { ++expiries_; }
  void count_execution(agent::ExecStatus status, uint64_t exec_time_us);

 private:
  struct Waiter {
    OwnedTimer<Waiter> timeout{on_wait_timeout, this};
    Pool* pool = nullptr;
    std::string identifier;
    AcquireFn done;
  };
  static void on_wait_timeout(TimerEntry* e, uint64_t now_ms);
  void on_sandboxes_ready();
  void on_container_end(uint64_t sandbox_id, const std::string& why);
  Session* bind(const std::string& identifier, Sandbox&& sandbox, AcquireError* error);
  void refill(bool after_allocation = false);
  size_t refill_target() const;
  static void on_refill_timer(TimerEntry* e, uint64_t now_ms);
  void free_ended();

  uv_loop_t* loop_;
  LoopTimers* timers_;
  Offload* offload_;
  PoolSettings settings_;
  std::unique_ptr<SandboxSource> source_;
  std::unordered_map<std::string, std::unique_ptr<Session>> sessions_;
  std::deque<Waiter*> waiters_;
  std::vector<std::unique_ptr<Session>> ended_;  // freed on the next loop turn, never under a call
  uv_idle_t reaper_idle_{};
  // A raised refill target, and the refill after an allocation, wait a few ms (unless requests are
  // waiting or nothing is ready): the spawn it starts costs milliseconds of CPU, and should not
  // compete with the first execution of the session that just took a sandbox.
  OwnedTimer<Pool> refill_timer_{on_refill_timer, this};
  size_t wanted_now_ = 0;
  bool stopping_ = false;
  std::function<void()> on_stopped_;
  // Metrics.
  uint64_t allocations_ = 0;
  uint64_t expiries_ = 0;
  uint64_t container_ends_ = 0;
  uint64_t rejected_full_ = 0;
  uint64_t wait_timeouts_ = 0;
  uint64_t executions_by_status_[6] = {};
  LatencyHistogram execution_latency_;
  LatencyHistogram allocation_wait_;
};

}  // namespace sp::pool
