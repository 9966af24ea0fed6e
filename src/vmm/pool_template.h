// The micro-VM tier's pool template (`sandpool vmm-template`, started by PoolSpawner) and the
// seccomp allowlist of the VMM processes it forks; not the VMM itself (vm.h).
#pragma once

#include <linux/filter.h>

#include <cstddef>

#include "sandbox/seccomp_policy.h"
#include "util/result.h"

namespace sp::vmm {

// `sandpool vmm-template --ctrl-fd 3 --parent PID ...` (internal; see pool_template.cc).
int vmm_template_main(int argc, char** argv);

// The VMM's own allowlist: what the VMM does for itself (KVM ioctls, guest memory, signals, one
// watcher thread) and the file, socket and time calls it makes on the guest's behalf. No exec, no
// fork, no namespaces, no sockets other than the given ones. Unknown calls fail with EPERM.
struct VmmSeccompEntry {
  const char* name;
  const char* reason;
};
Result<SeccompProgram> compile_vmm_seccomp_policy();
// The same policy split in two for a pool's VMM child, which loads its filter before its request
// (off the request's path) and still has the last isolation steps to make then: the "ahead" filter
// is the policy plus those steps' calls (cgroup namespace, chown of /mnt/data, ids, capabilities,
// prctl, seccomp, leaving SCHED_IDLE), the "lock" refuses exactly those calls and allows the rest.
// Stacked, they are the policy.
Result<SeccompProgram> compile_vmm_ahead_policy();
Result<SeccompProgram> compile_vmm_isolation_lock();

// True when this process can open /dev/kvm and create a VM (isolation: auto).
bool kvm_usable(std::string* why);

}  // namespace sp::vmm
