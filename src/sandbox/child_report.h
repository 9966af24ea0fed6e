// The numbered setup steps a sandbox child runs, and how it reports a failure to its parent; not the steps themselves.
//
// Contract: code between clone and exec (process_spawn.cc, template_clone.cc) only calls
// async-signal-safe functions. On the first failing step it writes one
// ChildReport to the report pipe and _exits(kChildSetupFailed). A successful
// exec closes the (O_CLOEXEC) pipe, so the parent reads 0 bytes on success.
#pragma once

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#ifdef __cplusplus
namespace sp {
#endif

// Step numbers are part of the wire format between child and parent; append only.
enum SandboxStep {
  kStepWaitParent = 1,    // read the parent's "go" after it wrote the id maps
  kStepRootIds,           // setresgid/setresuid(0) + setgroups(0) inside the user ns
  kStepCgroupNs,          // unshare(CLONE_NEWCGROUP) once placed in our cgroup
  kStepMountPrivate,      // mount --make-rprivate /
  kStepOpenSources,       // O_PATH fds on the bind sources, before they are shadowed
  kStepMountOps,          // the prepared list of mkdir/bind/tmpfs/proc operations
  kStepPivotRoot,         // pivot_root into the new root, detach the old one
  kStepLoopback,          // bring lo up
  kStepHostname,          // sethostname("sandbox")
  kStepRlimits,           // setrlimit for each configured limit
  kStepCapsBounding,      // drop the bounding set, lock securebits
  kStepUserIds,           // setresgid/setresuid to the unprivileged user
  kStepCapsClear,         // capset(0) and ambient clear
  kStepNoNewPrivs,        // PR_SET_NO_NEW_PRIVS
  kStepParentDeath,       // PR_SET_PDEATHSIG + check the parent is still alive
  kStepCloseFds,          // mark every inherited fd close-on-exec
  kStepSeccomp,           // load the precompiled filter (last)
  kStepExec,              // execveat of our init
  kStepNetNs,             // template clones: unshare(NEWNET|NEWIPC|NEWUTS|NEWNS)
  kStepJoinCgroup,        // template clones: write "0" to each cgroup.procs fd
  kStepCount
};

struct ChildReport {
  uint32_t step;
  int32_t err;
};

// Exit code of a child whose setup failed (the report carries the detail).
#define SP_CHILD_SETUP_FAILED 121

// Writes the report and _exits. Async-signal-safe.
// SAFETY: write(2) of a small POD to a pipe is atomic (< PIPE_BUF); _exit skips atexit handlers
// that belong to the parent's copy of the process.
__attribute__((noreturn)) static inline void sp_child_fail(int report_fd, uint32_t step, int err) {
  struct ChildReport r = {step, err};
  ssize_t n = write(report_fd, &r, sizeof r);
  (void)n;
  _exit(SP_CHILD_SETUP_FAILED);
}

#ifdef __cplusplus
const char* step_name(uint32_t step);
}  // namespace sp
#endif
