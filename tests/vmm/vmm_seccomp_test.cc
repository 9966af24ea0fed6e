// The VMM processes' seccomp filter (vmm/pool_template.h): in a forked child under the filter, what a
// VMM never needs fails with EPERM (exec, fork, sockets, namespaces, mounts, ptrace, terminal
// injection, non-KVM ioctls, ids, capabilities, prctl) and what it does need works (KVM ioctls,
// memfd, mmap, socketpair). Twice: the whole policy in one filter, and as a pool's VMM child
// stacks it (the ahead filter, the isolation's last calls made under it, then the lock). Needs no
// KVM for most checks; the KVM ioctl check runs when /dev/kvm opens.
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "vmm/pool_template.h"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++failures;
}

bool eperm(long r) { return r == -1 && errno == EPERM; }

bool load(const sp::Result<sp::SeccompProgram>& prog, const char* what) {
  check(prog.ok(), what);
  if (!prog.ok()) return false;
  sock_fprog fp = prog.value().prog();
  bool ok = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fp) == 0;
  check(ok, "  ... and loads (TSYNC)");
  return ok;
}

void under_filter(bool stacked) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);  // before the filter, as the template does
  int tty = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
  check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
  if (!stacked) {
    if (!load(sp::vmm::compile_vmm_seccomp_policy(), "the policy compiles")) return;
  } else {
    if (!load(sp::vmm::compile_vmm_ahead_policy(), "the ahead policy compiles")) return;
    // Under it, the isolation's last calls work (as the child makes them; a parent-death signal
    // and ids that change nothing, so that this test needs no privilege).
    check(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == 0, "ahead: prctl(PR_SET_PDEATHSIG) works");
    check(syscall(SYS_setresuid, -1, -1, -1) == 0, "ahead: setresuid works");
    check(syscall(SYS_setresgid, -1, -1, -1) == 0, "ahead: setresgid works");
    sched_param none{};
    check(syscall(SYS_sched_setscheduler, 0, SCHED_OTHER, &none) == 0, "ahead: sched_setscheduler works");
    check(eperm(syscall(SYS_unshare, CLONE_NEWNS)), "ahead: unshare other than CLONE_NEWCGROUP refused");
    check(eperm(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)), "ahead: other prctl options refused");
    if (!load(sp::vmm::compile_vmm_isolation_lock(), "the lock compiles")) return;
  }
  // Refused.
  const char* argv[] = {"/bin/true", nullptr};
  check(eperm(syscall(SYS_execve, "/bin/true", argv, nullptr)), "execve refused");
  check(eperm(syscall(SYS_fork)), "fork refused");
  check(eperm(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0)), "socket(AF_INET) refused");
  check(eperm(syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0)), "socket(AF_UNIX) refused");
  check(eperm(syscall(SYS_unshare, CLONE_NEWNS)), "unshare refused");
  check(eperm(syscall(SYS_setns, 0, 0)), "setns refused");
  check(eperm(syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, nullptr)), "mount refused");
  check(eperm(syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0)), "ptrace refused");
  check(eperm(syscall(SYS_open_by_handle_at, AT_FDCWD, nullptr, 0)), "open_by_handle_at refused");
  check(eperm(syscall(SYS_process_vm_readv, 1, nullptr, 0, nullptr, 0, 0)), "process_vm_readv refused");
  check(eperm(syscall(SYS_setresuid, 0, 0, 0)), "setresuid refused");
  check(eperm(syscall(SYS_setresuid, -1, -1, -1)), "setresuid refused, even changing nothing");
  check(eperm(syscall(SYS_setresgid, -1, -1, -1)), "setresgid refused");
  check(eperm(syscall(SYS_unshare, CLONE_NEWCGROUP)), "unshare(CLONE_NEWCGROUP) refused");
  check(eperm(syscall(SYS_chown, "/", 0, 0)), "chown refused");
  check(eperm(syscall(SYS_fchownat, AT_FDCWD, "/", 0, 0, 0)), "fchownat refused");
  check(eperm(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)), "prctl refused");
  sock_filter allow_all = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  sock_fprog one{1, &allow_all};
  check(eperm(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &one)), "seccomp refused");
  sched_param none{};
  check(eperm(syscall(SYS_sched_setscheduler, 0, SCHED_OTHER, &none)), "sched_setscheduler refused");
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct caps[2] = {};
  check(eperm(syscall(SYS_capset, &hdr, caps)), "capset refused");
  check(eperm(syscall(SYS_kill, 1, 0)), "kill refused (only tgkill, for the kick)");
  char c = 'x';
  check(eperm(syscall(SYS_ioctl, tty >= 0 ? tty : 0, TIOCSTI, &c)), "ioctl TIOCSTI refused");
  check(eperm(syscall(SYS_ioctl, 0, 0x5401 + 0x100, nullptr)), "a non-KVM, non-listed ioctl refused");
  // Allowed.
  int m = static_cast<int>(syscall(SYS_memfd_create, "t", MFD_CLOEXEC));
  check(m >= 0, "memfd_create works");
  check(ftruncate(m, 1 << 20) == 0, "ftruncate works");
  void* p = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE, m, 0);
  check(p != MAP_FAILED, "mmap of a memfd works");
  int sv[2];
  check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair works");
  int n = 0;
  check(ioctl(sv[0], FIONREAD, &n) == 0, "ioctl FIONREAD works");
  if (kvm >= 0) check(ioctl(kvm, KVM_GET_API_VERSION, 0) == KVM_API_VERSION, "KVM ioctls work");
}

}  // namespace

int main() {
  int rc = 0;
  for (bool stacked : {false, true}) {
    std::printf("%s\n", stacked ? "-- ahead filter + lock, as a pool's VMM child" : "-- the whole policy in one filter");
    std::fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      // A second thread lives across the loads, as a VMM child's watcher does: TSYNC must put it
      // under the filters too.
      int go[2];
      if (pipe(go) != 0) _exit(2);
      bool thread_refused = false;
      std::thread watcher([&] {
        char b;
        if (read(go[0], &b, 1) == 1) thread_refused = eperm(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
      });
      under_filter(stacked);
      check(write(go[1], "x", 1) == 1, "wake the other thread");
      watcher.join();
      check(thread_refused, "the other thread is under the filters too (TSYNC): socket(AF_INET) refused");
      std::fflush(stdout);
      _exit(failures == 0 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st)) std::printf("FAIL the filtered child died: status 0x%x\n", st);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
  }
  return rc;
}
