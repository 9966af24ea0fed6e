// Creates one isolated sandbox process running our init and a command (DESIGN.md §4); not the pool or the template path.
//
// Spawner::spawn() follows DESIGN.md §4 step by step: clone3 with a pidfd into
// new user, pid, mount, net, ipc, uts namespaces; the parent places the child
// in its cgroup and writes the id maps; the child builds its root (mounts.h),
// enters a cgroup namespace, brings lo up, applies rlimits, drops every
// privilege, loads the precompiled seccomp filter last and execs
// `sandpool init -- CMD...` through an fd on our own binary. A failing step is
// reported as "<step>: <errno>" and the child is reaped before spawn returns.
// The init exec'd is the static `sandpool-init` when it sits next to our binary (so it
// runs in any rootfs, glibc or not), else `sandpool init` via /proc/self/exe.
//
// Threading: call from one non-loop thread (the spawner, or the CLI's main
// thread). spawn() blocks until the child has exec'd (≈1 ms). The child gets
// PR_SET_PDEATHSIG(SIGKILL): it dies when the *calling thread* exits, so the
// calling thread must live as long as its sandboxes. SIGPIPE must be ignored by the
// process (a child that dies early closes the pipe we write "go" to).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "sandbox/cgroup.h"
#include "sandbox/mounts.h"
#include "sandbox/seccomp_policy.h"
#include "sandbox/userns.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace sp {

enum class Network { kIsolated };  // own netns with lo only (EgressEnabled: later)

struct SandboxSpec {
  MountConfig mounts;
  Network network = Network::kIsolated;
  uint64_t slot = 0;                  // selects the host uid/gid pair
  std::vector<std::string> argv;      // the command
  std::vector<std::string> env;       // KEY=VALUE, the whole environment of the command
  int respawns = 0;                   // init restarts a command killed by a signal this often
  // Custom containers (src/container/): when set, these replace the process tier's defaults.
  const MountPlan* plan = nullptr;    // a root plan prepared by the caller, used instead of `mounts`
                                      // (`mounts.data_bytes` still sizes the rlimits)
  uint32_t id_range = 0;              // > 0: inside ids 0..id_range-1 map to host ids host_id_base..
  uint32_t host_id_base = 0;          // (root parent only; replaces the slot's pair of ids)
  uid_t uid = kSandboxUid;            // inside ids the command runs as
  gid_t gid = kSandboxGid;
  int stdio_fd = -1;                  // >= 0: becomes stdin, stdout and stderr; -1: ours are inherited
  int output_fd = -1;                 // >= 0: becomes stdout and stderr instead (e.g. a log pipe)
};

// A running sandbox: its init's pid in our pid namespace, a pidfd to wait on, and the
// read end of init's status pipe ("exit N" / "signal N" on exit).
struct SandboxProcess {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd status_fd;
};

// Setup failure detail (the error's `where` is the step name, `code` its errno).
class Spawner {
 public:
  // Compiles the seccomp policy and opens our own binary; once per process.
  // `init_path`: the static sandpool-init to exec; empty: found next to our binary.
  static Result<Spawner> create(const std::string& init_path = {});

  // `cgroup` must be valid; the child is moved into it before it runs any setup.
  Result<SandboxProcess> spawn(const SandboxSpec& spec, Cgroup& cgroup) const;

  const SeccompProgram& seccomp() const { return seccomp_; }
  int self_exe_fd() const { return self_exe_.get(); }
  // Whether the init is the static sandpool-init (runs in any rootfs) rather than our own dynamic binary.
  bool static_init() const { return static_init_; }

 private:
  SeccompProgram seccomp_;
  UniqueFd self_exe_;         // sandpool-init (static) or our own binary
  bool static_init_ = false;
};

// The environment a sandboxed command gets unless told otherwise.
std::vector<std::string> default_sandbox_env();

}  // namespace sp
