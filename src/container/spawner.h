// ContainerSpawner: the spawner and reaper threads of one custom-container pool; not the probes or
// the ready set (container_source.h).
//
// Threads:
// - the spawner thread makes sandboxes on request (request()): per sandbox a host id range
//   (slot), the writable layer over the image (layer.h), a cgroup, then sp::Spawner::spawn over
//   the overlay with the container's argv/env/workdir/ids; it keeps an fd of the sandbox's
//   network namespace, queues the result (or the failure) and calls `wake` (e.g. uv_async_send).
//   It is the parent of every sandbox (PR_SET_PDEATHSIG): it lives until the spawner is destroyed.
// - the reaper thread destroys given-back sandboxes: SIGKILL to init (the pid namespace dies
//   with it) and cgroup.kill, wait, cgroup removal; the writable layer is freed with the
//   sandbox's mount namespace. Then the slot is reused.
// request(), take() and give_back() are for the loop thread; they take a mutex held only for O(1)
// queue operations, never block on I/O and never call `wake` synchronously.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "container/launch.h"
#include "sandbox/cgroup.h"
#include "sandbox/process_spawn.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::container {

struct SpawnConfig {
  std::string pool = "pool";      // cgroup names and logs
  std::string image_rootfs;       // the shared, unpacked image (read-only to sandboxes)
  std::string run_dir;            // where layers are assembled (a dir per server process below)
  std::string init_path;          // static sandpool-init; empty: next to our binary
  Launch launch;
  CgroupLimits limits;
  uint64_t data_bytes = 1ull << 30;  // the writable layer's tmpfs
  bool capture_output = false;       // stdout+stderr into a pipe (Spawned::output); else /dev/null
};

// One spawn's outcome. ok(): a running sandbox (its init exec'd), not yet probed.
struct Spawned {
  uint64_t id = 0;
  uint32_t slot = 0;
  SandboxProcess proc;     // pid, pidfd, init's status pipe
  Cgroup cgroup;
  UniqueFd netns;          // the sandbox's network namespace
  UniqueFd output;         // capture_output: the read end (non-blocking) of its stdout+stderr pipe
  uint64_t started_ns = 0; // CLOCK_MONOTONIC when the spawn began
  uint64_t spawned_ns = 0; // ... and when init had exec'd
  std::string error;       // non-empty: the spawn failed (nothing to reap)
  bool ok() const { return error.empty(); }
};

class ContainerSpawner {
 public:
  using WakeFn = void (*)(void* ctx);

  // Opens the cgroup hierarchy (reclaiming dead runs' cgroups and layer dirs) and starts both
  // threads. Blocking (tens of ms); any thread.
  static Result<std::unique_ptr<ContainerSpawner>> start(SpawnConfig cfg, WakeFn wake, void* ctx);
  // Joins the spawner thread (which kills, by PDEATHSIG, every sandbox not given back), then
  // reaps everything and joins the reaper. Blocking.
  ~ContainerSpawner();
  ContainerSpawner(const ContainerSpawner&) = delete;
  ContainerSpawner& operator=(const ContainerSpawner&) = delete;

  void request(uint32_t n);          // make n more sandboxes
  std::vector<Spawned> take();       // everything finished since the last call
  void give_back(Spawned&& s);       // to the reaper
  uint64_t reaped() const;
  uint32_t requested() const;        // requested and not yet taken

  struct Impl;

 private:
  explicit ContainerSpawner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

uint64_t monotonic_ns();

// How a container ended, from init's status line ("exit N" / "signal N", empty when init itself
// was killed) and whether its cgroup saw an OOM kill: "container exited with status 3",
// "container killed by signal 9 (SIGKILL)", "killed: out of memory", "container init was killed".
std::string describe_exit(const std::string& status_line, bool oom_killed);

}  // namespace sp::container
