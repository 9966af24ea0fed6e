// PoolSpawner: keeps a pool's warm Python template and a supply of ready, isolated clones of it; not the session table.
//
// Threads (DESIGN.md §1):
// - the spawner thread owns the template process and creates clones: it sends
//   the template a request with fresh fds (agent socketpair end, report pipe,
//   cgroup.procs), the template forks, the clone isolates itself
//   (template_clone.h) and reports ready; the spawner then pushes a
//   ReadySandbox into the ready ring (SPSC, spawner → loop) and calls on_ready
//   (e.g. uv_async_send) so the loop can take() it;
// - the loop thread calls take() and, when a session ends, give_back(), which
//   pushes into the finished ring (SPSC, loop → reaper);
// - the reaper thread kills the clone (SIGKILL to its pid 1 via the pidfd,
//   cgroup.kill), waits for its exit, removes its cgroup; the tmpfs holding its
//   files vanishes with its mount namespace.
// take() and give_back() never block and never allocate; only one thread may
// call them (the loop). on_ready runs on the spawner thread.
// Clones die with the server: the template has PDEATHSIG on the spawner thread,
// each clone has PDEATHSIG on the template; start() reclaims cgroups of dead runs.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sandbox/cgroup.h"
#include "sandbox/template_memory.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace sp {

struct PoolTemplateConfig {
  std::string pool = "default";         // used in cgroup names and logs ([A-Za-z0-9_-])
  std::string python = "/usr/bin/python3";
  std::string preload = "numpy,pandas,matplotlib.pyplot";
  std::string agent_path;               // directory with sandpool_agent.py; empty or absent: echo loop (tests)
  std::string runtime_dir;              // template.py + libsandpool_clone.so; empty: found next to our binary
  CgroupLimits limits;                  // per clone
  uint64_t data_bytes = 256ull << 20;   // /mnt/data of each clone
  uint64_t tmp_bytes = 64ull << 20;     // /tmp of each clone
  uint32_t ready_target = 4;            // clones kept ready
  uint32_t max_pending = 2;             // clones isolating themselves at once
  uint32_t templates = 1;               // template processes forking in parallel (≈ cores for refill rate)
  bool netns_ahead = true;              // make each clone's network namespace ahead, in the spawner
  // When the next clone's cgroup and network namespace (≈ 0.7-1.2 ms) are made: false, after the
  // ready record; true, right after a request is sent, while the template forks. Made during the
  // clone, they delayed the template's wake-up to read the request (median 30 → 400-490 µs) and
  // the spawner's reading of the report: a process-tier clone-to-ready took 1.37-1.51 ms after
  // and 2.06-2.21 ms during (11-29, 17:31–17:33; bench/results/sandbox-2026-11-29.md).
  bool prepare_next_during_clone = false;
  // Required by `sandpool vmm-template` and only for it (passed on as --offer-spares): the template offers each
  // child it forks ahead (a reply with generation 0: pid, pidfd, the template's end of the child's
  // socket) and each request goes straight to the offered child, one process hop less than
  // through the template (which makes its children in the background, SCHED_IDLE).
  bool direct_spares = false;
  // CPU weight (cgroup2 units, 100 = default) of the template, of clones until they are ready
  // and of clones being torn down: spawning and teardown run in the background, so that
  // sandboxes serving requests win the CPU. A clone keeps it while it waits in the pools
  // (its agent's start-up included) until the consumer calls ReadySandbox::foreground().
  // 0: everything at the default weight.
  uint32_t spawn_cpu_weight = 1;
  bool reap_hold = true;                // teardowns wait (≤ 20 ms) for the forks under way to end
  // How the template lays out its memory before serving forks (template_memory.h): fewer
  // page-table entries for each fork to copy. Where the kernel refuses, it works the same, slower.
  TemplateMemory memory = TemplateMemory::kShared;
  uint32_t ring_capacity = 1024;        // both rings
  // The consumer sends each clone's agent a warm-up execute before it counts as ready
  // (ProcessSource::send_warm_up): the agent's first worker then skips its own hello-time
  // warm-up cell, which would only add pages (Python template only; passed as --host-warms-up).
  bool host_warms_up = false;
  // A clone not ready this long after its request is stuck (a hung mount, a VMM child that took
  // its request and never answers): it is killed and counted as a failed spawn, so that it does
  // not hold its pending slot, and with it the refill, forever.
  uint32_t clone_timeout_ms = 30000;
  // A template that has not answered a request (the fork's pid) this long after it is hung: it is
  // restarted, and the clones it had made but not yet finished fail with it.
  uint32_t template_answer_timeout_ms = 30000;
  // The template's cgroup: its own memory and, for micro-VM templates, the kernel memory each
  // clone made ahead leaves charged there for as long as the clone lives (set_template_memory).
  uint64_t template_memory_bytes = 2ull << 30;
  // Non-empty: the template program and its first arguments instead of `python -I template.py`
  // (the micro-VM tier's `sandpool vmm-template`); it gets the same arguments and protocol.
  std::vector<std::string> template_cmd;
};

struct ReadySandbox {
  uint64_t generation = 0;   // unique per spawner; sessions compare it to detect reuse
  pid_t pid = -1;            // the clone (pid 1 of its own pid ns), in our pid ns
  UniqueFd pidfd;            // POLLIN once the clone has exited
  UniqueFd agent_fd;         // connected SOCK_STREAM to the clone's agent (serve(fd))
  Cgroup cgroup;             // memory/pids/cpu of this clone; oom_kills() tells an OOM death
  uint64_t ready_ns = 0;     // request sent → ready record read (clone-to-ready)
  uint64_t fork_ns = 0;      // of which the template spent this long in fork() (page-table copy)
  bool background = false;   // its cgroup still has the spawn weight (PoolTemplateConfig::spawn_cpu_weight)

  // False once the clone has exited. A clone can die while it waits in the ready ring (its
  // template crashed, a host OOM kill): check before binding it to a session, or treat a
  // failing first exchange on agent_fd the same way, and give it back. One poll(2).
  bool alive() const;
  // Gives the clone the default CPU weight (one cgroupfs write) if it still has the spawn
  // weight: call it once its start-up is over (the agent's hello), before it serves.
  void foreground();
};

struct SpawnerStats {
  std::atomic<uint64_t> spawned{0}, failed{0}, reaped{0};
  std::atomic<uint64_t> last_error{0};  // errno of the last failure
};

class PoolSpawner {
 public:
  using WakeFn = void (*)(void* ctx);

  // Starts the template (blocks until its libraries are imported, ~0.5 s) and the
  // spawner and reaper threads. on_ready(ctx) is called on the spawner thread after
  // each push into the ready ring; it may be null.
  static Result<std::unique_ptr<PoolSpawner>> start(PoolTemplateConfig cfg, WakeFn on_ready = nullptr,
                                                    void* ctx = nullptr);
  ~PoolSpawner();  // stops the threads, kills the template and every clone it still owns
  PoolSpawner(const PoolSpawner&) = delete;
  PoolSpawner& operator=(const PoolSpawner&) = delete;

  // Loop thread: a ready clone, or nothing when the ring is empty (refill is under way).
  std::optional<ReadySandbox> take();
  // Loop thread: hands a finished clone to the reaper. False when the finished ring is
  // full (then `sb` is untouched: keep it and retry).
  bool give_back(ReadySandbox&& sb);
  // Any thread.
  void set_ready_target(uint32_t n);
  size_t ready_count() const;
  const SpawnerStats& stats() const;
  pid_t template_pid() const;
  // Bytes the template's own cgroup is charged (incl. page tables of forked clones).
  uint64_t template_memory() const;
  // Loop thread, after start: a new limit for the template's cgroup (see template_memory_bytes).
  Status set_template_memory(uint64_t bytes);

  struct Impl;

 private:
  explicit PoolSpawner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sp
