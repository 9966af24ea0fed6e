// SandboxSource: where a pool's ready sandboxes come from and where finished ones go; an interface,
// implemented by the process tier's template spawner (and a test source).
//
// Threading: every method but prepare() is called on the loop thread. Implementations create
// sandboxes on their own thread(s) and hand them over through a single-producer/single-consumer
// ring, waking the loop with `on_ready` (called on the loop thread). A sandbox is "ready" when its
// agent has said hello. Nothing here blocks the loop: the blocking start-up is prepare(), run on an
// Offload thread, and the blocking part of stop() (joining threads, reaping) goes to an Offload too.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "pool/offload.h"
#include "pool/settings.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::pool {

// A ready sandbox. Owned by exactly one party: the source's ring, a session, or the reaper.
struct Sandbox {
  uint64_t id = 0;         // unique per source, for logs and generation checks
  UniqueFd agent_fd;       // connected socket to the agent (hello already consumed)
  pid_t pid = -1;          // the sandbox's init as seen from the server
  uint64_t ready_ns = 0;   // when it became ready (CLOCK_MONOTONIC), for metrics
  void* opaque = nullptr;  // the source's own bookkeeping (cgroup, pidfd, ...)
};

struct SourceStats {
  uint64_t spawned = 0;        // sandboxes made ready
  uint64_t spawn_failures = 0; // attempts that failed
  uint64_t pending = 0;        // being created now
  uint64_t reaped = 0;         // destroyed after use
  uint64_t log_lines = 0;      // custom containers: lines of their output written to our log
  uint64_t log_dropped = 0;    // ... and lines dropped over the log rate
  std::string last_error;      // the most recent failure, for logs and /metrics
};

// What a custom-container source offers beyond SandboxSource (loop thread only). Its sandboxes have
// no agent: Sandbox::agent_fd is not used; the session reaches the container over TCP instead.
class ContainerAccess {
 public:
  virtual ~ContainerAccess() = default;
  // A TCP connection to 127.0.0.1:<targetPort> inside `sandbox`'s own network namespace (no host
  // port is ever opened): a non-blocking socket whose connect() has been started; wait until it is
  // writable, then read SO_ERROR. Fails when the sandbox is gone.
  virtual Result<UniqueFd> open_upstream(const Sandbox& sandbox) = 0;
  // `fn(sandbox_id, why)` runs on the loop thread when a sandbox that was pop()ped (bound to a
  // session) ends on its own: its entrypoint exited, it was killed (out of memory...), or its
  // liveness probe failed. The session then ends and release()s it as usual.
  virtual void set_on_container_end(std::function<void(uint64_t sandbox_id, const std::string& why)> fn) = 0;
};

class SandboxSource {
 public:
  virtual ~SandboxSource() = default;
  // The blocking start-up (importing an image, starting the template and the threads): called once,
  // on an Offload thread (or on the loop thread before the loop runs, at server start). It touches
  // no loop handle and calls no callback; the loop thread does not use the source meanwhile.
  // start() follows only when it succeeded; stop() follows in every case.
  virtual Status prepare() { return {}; }
  // Starts the producer after a successful prepare(); quick. `on_ready` runs on the loop thread
  // whenever pop() may have more.
  virtual Status start(std::function<void()> on_ready) = 0;
  // Keep this many sandboxes ready (0 stops refilling). Never exceeds what the pool allows.
  virtual void set_wanted(size_t ready_wanted) = 0;
  // The pool's settings changed (PATCH/PUT); only what may change while it runs (settings.cc).
  virtual void settings_changed(const PoolSettings& settings) { (void)settings; }
  // Takes one ready sandbox, O(1); nullopt when none is ready.
  virtual std::optional<Sandbox> pop() = 0;
  virtual size_t ready_count() const = 0;
  // Gives a finished sandbox to the reaper: its processes are killed, its cgroup removed and its
  // files wiped off the loop thread.
  virtual void release(Sandbox&& sandbox) = 0;
  // Stops producing, destroys every ready and released sandbox; `on_stopped` runs on the loop
  // thread when nothing of this source is left (threads joined, sandboxes reaped, handles closed).
  // The blocking part runs on `offload`; may be called without start() (prepare() failed, or the
  // pool was deleted while it was being prepared). `on_stopped` may run synchronously.
  virtual void stop(Offload& offload, std::function<void()> on_stopped) = 0;
  virtual SourceStats stats() const = 0;
  virtual const char* tier() const = 0;  // "process" or "microvm", for /metrics
  // Custom-container sources return their ContainerAccess; code-interpreter sources nullptr.
  virtual ContainerAccess* containers() { return nullptr; }
};

}  // namespace sp::pool
