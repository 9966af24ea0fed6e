// Names of the sandbox setup steps, for error messages.
#include "sandbox/child_report.h"

namespace sp {

const char* step_name(uint32_t step) {
  static const char* const kNames[kStepCount] = {
      "?", "wait for parent", "become root in user ns", "unshare cgroup ns", "make mounts private",
      "open bind sources", "mount operations", "pivot_root", "loopback up", "sethostname", "rlimits",
      "drop bounding set", "switch to sandbox user", "clear capabilities", "no_new_privs", "parent death signal",
      "close inherited fds", "load seccomp", "exec init", "unshare namespaces", "join cgroup",
  };
  uint32_t base = step & 0xff;
  return base < kStepCount ? kNames[base] : "?";
}

}  // namespace sp
