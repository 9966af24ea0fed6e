// Loading a precompiled seccomp program; kept apart from the policy so the template's module needs no libseccomp.
#include <errno.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox/seccomp_policy.h"

namespace sp {

int load_seccomp_program(const sock_fprog* fprog) {
  // SAFETY: raw syscall with a program the parent compiled; the kernel validates it.
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, fprog) != 0) return errno;
  return 0;
}

}  // namespace sp
