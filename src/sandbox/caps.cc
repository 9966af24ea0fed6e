// rlimits, capability sets and NO_NEW_PRIVS for sandbox children (raw syscalls, no allocation).
#include "sandbox/caps.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sp {

RlimitSet default_rlimits(uint64_t max_file_bytes, uint32_t max_procs) {
  RlimitSet s;
  auto add = [&](int r, rlim_t v) { s.items[s.count++] = RlimitSetting{r, v, v}; };
  add(RLIMIT_CORE, 0);                    // no core files in /mnt/data
  add(RLIMIT_NOFILE, 4096);
  add(RLIMIT_MEMLOCK, 64 * 1024);
  add(RLIMIT_MSGQUEUE, 64 * 1024);
  add(RLIMIT_RTPRIO, 0);
  (void)max_file_bytes;  // no RLIMIT_FSIZE: the tmpfs sizes bound files, and ENOSPC beats SIGXFSZ for users
  // Per host uid; every sandbox has its own host uid, so this is per sandbox too.
  if (max_procs) add(RLIMIT_NPROC, max_procs);
  return s;
}

int apply_rlimits_in_child(const RlimitSet& set) {
  for (int i = 0; i < set.count; ++i) {
    rlimit rl{set.items[i].soft, set.items[i].hard};
    if (setrlimit(set.items[i].resource, &rl) != 0) return errno;
  }
  return 0;
}

int clear_bounding_set() {
  int last = CAP_LAST_CAP;
  // The running kernel may know more capabilities than our headers.
  for (int cap = 0; cap <= 63; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      if (errno == EINVAL && cap > last) break;
      return errno;
    }
  }
  return 0;
}

int drop_bounding_set_in_child() {
  if (int err = clear_bounding_set()) return err;
  return lock_securebits_in_child();
}

int lock_securebits_in_child() {
  // No privilege from uid 0 or from exec'ing setuid files, ever again.
  int bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
             SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  if (prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0) return errno;
  return 0;
}

int clear_caps_in_child() {
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return errno;
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  // SAFETY: capset with zeroed sets for the calling thread; v3 header takes two data words.
  if (syscall(SYS_capset, &hdr, data) != 0) return errno;
  return 0;
}

int set_no_new_privs_in_child() {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
  return 0;
}

}  // namespace sp
