// Per-sandbox cgroups (memory, pids, cpu) behind one interface for cgroup v1, v2 and the hybrid layout; not the limits policy.
//
// Layout: <controller root>/<prefix>/o<pid>_<starttime>/<sandbox name>. The owner
// directory names the server process that made it, so a later run can tell its
// own cgroups from leftovers of a dead one (reclaim_stale) without touching
// those of another live server. On a hybrid host (v1 controllers plus a cgroup2
// mount with none), the v2 directory is still made, for cgroup.kill.
//
// Threading: a CgroupManager is used from one thread at a time (the spawner or
// the reaper); Cgroup handles may move between threads. All calls block on
// cgroupfs writes (tens of µs); never call them from the loop thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace sp {

enum class CgroupVersion { kV1, kV2 };

struct CgroupLimits {
  uint64_t memory_bytes = 512ull << 20;   // for the user's code
  uint64_t headroom_bytes = 16ull << 20;  // for init/agent, on top; the cgroup limit is the sum
  uint32_t pids_max = 256;
  uint32_t cpu_millis = 1000;             // 1000 = one full CPU; 0 = unlimited
};

class Cgroup {
 public:
  Cgroup() = default;
  Cgroup(Cgroup&&) noexcept = default;
  Cgroup& operator=(Cgroup&&) noexcept;
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  ~Cgroup();  // best effort kill() + remove() unless already removed

  bool valid() const { return !dirs_.empty(); }
  const std::string& name() const { return name_; }

  // Moves `pid` (a whole thread group) into every hierarchy.
  Status add(pid_t pid);
  // Opens each hierarchy's cgroup.procs for writing, so that a child can move itself
  // (write "0") before dropping privileges; the caller owns the fds.
  Result<std::vector<UniqueFd>> open_procs_fds() const;
  // Number of OOM kills inside this cgroup so far (memory.oom_control / memory.events).
  uint64_t oom_kills() const;
  // Bytes charged to the memory controller, kernel memory included.
  uint64_t memory_current() const;
  // SIGKILLs every task: cgroup.kill where a v2 directory exists, else a kill loop.
  Status kill();
  // Removes the directories; fails with EBUSY while tasks remain (after retrying for ≈ 0.5 s).
  Status remove();
  // One rmdir per directory that is left, without waiting (BusyCgroups' retries).
  Status remove_now();
  // CPU weight relative to sibling cgroups, in cgroup2 units (1..10000, 100 = default);
  // v1: cpu.shares = weight * 1024 / 100 (at least 2). ENOENT without a cpu controller.
  // One open+write; callers use it to run spawning and dying sandboxes in the background.
  Status set_cpu_weight(uint32_t weight);
  // Changes the memory limit (memory.max; v1: limit_in_bytes and, where present, memsw, in the
  // order that keeps memsw ≥ the limit).
  Status set_memory_limit(uint64_t bytes);

 private:
  friend class CgroupManager;
  CgroupVersion version_ = CgroupVersion::kV1;
  std::string name_;
  std::vector<std::string> dirs_;  // v1: memory, pids, cpu[, unified]; v2: one
  std::string memory_dir_, pids_dir_, unified_dir_, cpu_dir_;
};

// Cgroups whose removal stayed busy after Cgroup::remove()'s retries (their killed tasks still
// exiting, e.g. many large sandboxes dying at once on a busy machine): kept and tried again later
// by their owner, instead of staying until the next start reclaims them. Thread-safe.
class BusyCgroups {
 public:
  void add(Cgroup&& cg);
  // Kills each again and tries its rmdir once; returns how many are still left.
  size_t retry();
  // retry() every 50 ms until none is left or `max_ms` passed (an owner's last chance, at its
  // end; what is still left, the next start reclaims).
  void retry_for(int max_ms);
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::vector<Cgroup> list_;
};

class CgroupManager {
 public:
  // Detects the layout under `root` (normally /sys/fs/cgroup) and creates this
  // process's owner directory. Fails with ENOENT when no usable memory+pids controllers exist.
  static Result<CgroupManager> open(std::string root = "/sys/fs/cgroup", std::string prefix = "sandpool");
  CgroupManager() = default;
  CgroupManager(CgroupManager&&) = default;
  // Assigning over an open manager first ends its use of the owner directories.
  CgroupManager& operator=(CgroupManager&& o) noexcept;
  ~CgroupManager() { remove_owner_dirs(); }

  CgroupVersion version() const { return version_; }
  bool has_kill() const { return !unified_.empty(); }
  std::string describe() const;

  // Makes <owner>/<name> in every hierarchy and applies the limits. with_kill_dir: on a
  // hybrid host also make the v2 directory (for cgroup.kill); each extra hierarchy costs
  // the joining task one more migration (0.1–10 ms here), so clones in their own pid
  // namespace, which die with their pid 1, skip it.
  Result<Cgroup> create(std::string_view name, const CgroupLimits& limits, bool with_kill_dir = true);

  // Kills and removes cgroups under the prefix whose owner process is gone.
  // Returns how many sandbox cgroups were reclaimed.
  int reclaim_stale();

  // Ends this manager's use of the process's owner directories (once per open(); the destructor
  // does it too); the last user removes them. They are shared by every pool of the process: removing them while another
  // pool's manager is open would make its next create() fail.
  void remove_owner_dirs();

 private:
  CgroupVersion version_ = CgroupVersion::kV1;
  std::string prefix_, owner_;
  // v1: memory, pids, cpu roots; v2: the single root. unified_: the v2 root usable for cgroup.kill.
  std::string memory_, pids_, cpu_, unified_;
  // This manager counts as a user of the owner directories (open() to remove_owner_dirs());
  // a move hands that over.
  struct OwnerRef {
    bool held = false;
    OwnerRef() = default;
    OwnerRef(OwnerRef&& o) noexcept : held(std::exchange(o.held, false)) {}
    OwnerRef& operator=(OwnerRef&& o) noexcept {
      held = std::exchange(o.held, false);
      return *this;
    }
  } owner_ref_;
};

// Host tuning, opt-in: remounts the cgroup2 hierarchy (v2 root, or the hybrid's "unified")
// with or without `favordynmods`, keeping its other options. With it, moving a task into a
// cgroup no longer waits for an RCU grace period (measured here: 5–17 ms per clone join
// without, 0.1–6 ms with), at the cost of slightly slower fork/exit host-wide. Returns
// whether it was on before, so a caller can restore it.
Result<bool> cgroup_set_favor_dynmods(bool on, const std::string& root = "/sys/fs/cgroup");

// Small helpers shared with tests.
Status write_file(const std::string& path, std::string_view text);
Result<std::string> read_file(const std::string& path);
// "o<pid>_<starttime>" of process `pid`, or empty when it does not exist.
std::string owner_tag(pid_t pid);

}  // namespace sp
