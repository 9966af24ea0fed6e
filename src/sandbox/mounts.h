// The sandbox's filesystem: a plan of mount operations built in the parent and replayed in the child; not the namespaces.
//
// The parent (any thread; allocates) turns a MountConfig into a MountPlan: a
// flat list of mkdir/symlink/bind/tmpfs/proc/read-only operations on paths
// under a staging directory. The child (no allocation, async-signal-safe)
// replays it in its private mount namespace, then pivots into the result.
// The result: a read-only tmpfs root holding read-only, nosuid binds of the
// runtime (host /usr, /lib*, /bin or a rootfs directory), a minimal /etc,
// /dev with null, zero, full, random, urandom, a fresh /proc (/proc/sys
// read-only), writable size-limited tmpfs at /mnt/data (uid 1000, the working
// directory) and /tmp, and no /sys.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/result.h"

namespace sp {

struct BindSpec {
  std::string source;  // host path
  std::string target;  // path inside the sandbox
  bool writable = false;
};

// Which part of the root a plan builds. kWhole: everything, for one sandbox (exec path).
// The template path splits it: kBase is built once by the template in its own mount
// namespace and pivoted into (runtime, /etc, /dev, empty mount points, a small /tmp of its
// own); kScratch is what each clone adds on top of its copy of that namespace (fresh tmpfs
// /mnt/data, /tmp, /dev/shm and a /proc of its pid namespace), with absolute targets and no
// pivot. A clone thus copies a dozen mounts instead of the host's whole mount table.
enum class MountLayer : uint8_t { kWhole, kBase, kScratch };

struct MountConfig {
  MountLayer layer = MountLayer::kWhole;
  std::string rootfs;                   // empty: the host's runtime
  uint64_t data_bytes = 256ull << 20;   // /mnt/data
  uint64_t tmp_bytes = 64ull << 20;     // /tmp
  uint64_t shm_bytes = 16ull << 20;     // /dev/shm
  bool privileged = true;               // /mnt/data owned by uid 1000 (else by 0)
  std::vector<BindSpec> extra_binds;
};

enum class MountOpKind : uint8_t { kMkdir, kSymlink, kTouch, kWriteFile, kBind, kMount, kSetattr };

struct MountOp {
  MountOpKind kind;
  std::string target;   // absolute, under the staging directory
  std::string arg;      // bind: source path; symlink: link text; mount: fs type; write: content
  std::string data;     // mount: options string
  unsigned long flags = 0;  // mount(2) flags, or MOUNT_ATTR_* for kSetattr
  bool recursive = false;
};

struct MountPlan {
  std::string staging = "/tmp";       // shadowed in the child's private mount ns only
  std::vector<std::string> sources;   // host paths the child opens O_PATH before mounting
  std::vector<MountOp> ops;
  std::string workdir = "/mnt/data";
};

// First fd number the child dup3()s its source fds to; binds use /proc/self/fd/<n>.
inline constexpr int kSourceFdBase = 200;
inline constexpr int kMaxSources = 56;

Result<MountPlan> build_mount_plan(const MountConfig& cfg);

// In the child: open the sources. Returns 0 or errno; *failed = index.
int open_mount_sources_in_child(const MountPlan& plan, uint32_t* failed);
// In the child: replay the operations. Returns 0 or errno; *failed = op index.
int run_mount_plan_in_child(const MountPlan& plan, uint32_t* failed);
// In the child: pivot_root into the staging directory, detach the old root, chdir(workdir).
int pivot_in_child(const MountPlan& plan);

}  // namespace sp
