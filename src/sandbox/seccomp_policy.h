// The seccomp allowlist for sandboxed code (one table, a reason per syscall) and its compiler; not the loader's caller.
//
// Contract: compile_seccomp_policy() runs once in the parent (any thread; it
// allocates) and yields a classic-BPF program. load_seccomp_program() is
// async-signal-safe and is the last step before exec in a sandbox child, or the
// last isolation step of a template clone. Unknown syscalls fail with EPERM;
// clone3 fails with ENOSYS so libc falls back to clone(2), whose flags we can
// inspect; i386 (int 0x80), x32 and any foreign architecture kill the process.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "util/result.h"

namespace sp {

struct SeccompProgram {
  std::vector<sock_filter> insns;
  sock_fprog prog() const {
    // SAFETY: the kernel only reads the array; sock_fprog's pointer is non-const by ABI.
    return sock_fprog{static_cast<unsigned short>(insns.size()), const_cast<sock_filter*>(insns.data())};
  }
};

enum class SeccompRule {
  kAllow,          // always allowed
  kAllowNoNs,      // clone(2): allowed unless a CLONE_NEW* flag is set
  kAllowSocket,    // socket(2)/socketpair(2): AF_UNIX, AF_INET, AF_INET6; AF_NETLINK with NETLINK_ROUTE
  kAllowIoctl,     // ioctl(2): everything but terminal injection (TIOCSTI, TIOCLINUX)
  kAllowPersona,   // personality(2): query or PER_LINUX only
  kEnosys,         // fail with ENOSYS so callers fall back
};

struct SeccompEntry {
  const char* name;
  SeccompRule rule;
  const char* reason;
};

// The policy table (exposed for tests and for `sandpool sandbox-run --print-policy`).
const SeccompEntry* seccomp_policy(size_t* count);

Result<SeccompProgram> compile_seccomp_policy();

// A filter compiled with libseccomp: `default_action` (an SCMP_ACT_* value) for the calls no rule
// matches, foreign architectures (i386 via int 0x80 included) killing the whole process, the rules
// `add_rules` puts into the context it is given (a scmp_filter_ctx, a void* in libseccomp's API; it
// returns 0 or a negative errno), exported as a binary tree of syscall numbers. Also for the VMM's
// own policies (vmm_seccomp.cc).
Result<SeccompProgram> compile_seccomp_filter(uint32_t default_action, const std::function<int(void* ctx)>& add_rules);

// Loads `fprog` into the calling thread. Returns 0 or an errno. Async-signal-safe.
int load_seccomp_program(const sock_fprog* fprog);

}  // namespace sp
