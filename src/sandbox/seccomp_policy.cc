// The seccomp allowlist and its compilation with libseccomp to BPF; loading is seccomp_load.cc.
#include "sandbox/seccomp_policy.h"

#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <termios.h>

#include <initializer_list>
#include <unistd.h>

#include <sched.h>
#include <sys/personality.h>
#include <sys/socket.h>

#include "util/unique_fd.h"

namespace sp {
namespace {

using R = SeccompRule;

// Every syscall not listed here fails with EPERM. Deliberately absent (so denied), among
// others: mount, umount2, pivot_root, chroot, unshare, setns, ptrace, process_vm_*,
// kexec_*, *init_module, bpf, perf_event_open, userfaultfd, io_uring_*, keyctl, add_key,
// request_key, clock_settime, settimeofday, adjtimex, reboot, swapon, swapoff, acct,
// syslog, quotactl, open_by_handle_at, name_to_handle_at, fanotify_*, set*uid, set*gid,
// setgroups, mknod, pidfd_getfd, mlock*, iopl, ioperm, vhangup, lookup_dcookie.
constexpr SeccompEntry kPolicy[] = {
    // I/O on descriptors the process owns.
    {"read", R::kAllow, "basic I/O"},
    {"write", R::kAllow, "basic I/O"},
    {"readv", R::kAllow, "vectored I/O"},
    {"writev", R::kAllow, "vectored I/O (stdio, logging)"},
    {"pread64", R::kAllow, "positioned reads (zip imports, sqlite)"},
    {"pwrite64", R::kAllow, "positioned writes"},
    {"preadv", R::kAllow, "positioned vectored I/O"},
    {"pwritev", R::kAllow, "positioned vectored I/O"},
    {"preadv2", R::kAllow, "positioned vectored I/O"},
    {"pwritev2", R::kAllow, "positioned vectored I/O"},
    {"lseek", R::kAllow, "file offsets"},
    {"sendfile", R::kAllow, "shutil.copyfile fast path"},
    {"copy_file_range", R::kAllow, "shutil / cp fast path"},
    {"splice", R::kAllow, "pipe data movement within the sandbox"},
    {"tee", R::kAllow, "pipe data movement within the sandbox"},
    {"close", R::kAllow, "descriptor lifetime"},
    {"close_range", R::kAllow, "subprocess closes inherited fds"},
    {"dup", R::kAllow, "descriptor duplication"},
    {"dup2", R::kAllow, "descriptor duplication (shells, subprocess)"},
    {"dup3", R::kAllow, "descriptor duplication"},
    {"fcntl", R::kAllow, "fd flags, locks"},
    {"flock", R::kAllow, "advisory locks on sandbox files"},
    {"ioctl", R::kAllowIoctl, "FIONREAD, TCGETS (isatty) etc.; TIOCSTI/TIOCLINUX (terminal injection) refused"},
    {"pipe", R::kAllow, "pipes between sandbox processes"},
    {"pipe2", R::kAllow, "pipes between sandbox processes"},
    {"fsync", R::kAllow, "durability calls are harmless on tmpfs"},
    {"fdatasync", R::kAllow, "durability calls are harmless on tmpfs"},
    {"sync_file_range", R::kAllow, "durability calls are harmless on tmpfs"},
    {"fadvise64", R::kAllow, "access hints"},
    {"readahead", R::kAllow, "access hints"},
    {"fallocate", R::kAllow, "preallocation; bounded by the tmpfs size"},
    {"ftruncate", R::kAllow, "file size changes inside the sandbox"},
    {"truncate", R::kAllow, "file size changes inside the sandbox"},
    // Paths (the mount namespace decides what is reachable).
    {"open", R::kAllow, "file access inside the sandbox root"},
    {"openat", R::kAllow, "file access inside the sandbox root"},
    {"openat2", R::kAllow, "file access with RESOLVE_* restrictions"},
    {"creat", R::kAllow, "file creation"},
    {"stat", R::kAllow, "metadata"},
    {"fstat", R::kAllow, "metadata"},
    {"lstat", R::kAllow, "metadata"},
    {"newfstatat", R::kAllow, "metadata"},
    {"statx", R::kAllow, "metadata"},
    {"statfs", R::kAllow, "free space (shutil.disk_usage)"},
    {"fstatfs", R::kAllow, "free space"},
    {"access", R::kAllow, "permission checks"},
    {"faccessat", R::kAllow, "permission checks"},
    {"faccessat2", R::kAllow, "permission checks"},
    {"getdents", R::kAllow, "directory listing"},
    {"getdents64", R::kAllow, "directory listing"},
    {"getcwd", R::kAllow, "working directory"},
    {"chdir", R::kAllow, "working directory"},
    {"fchdir", R::kAllow, "working directory"},
    {"rename", R::kAllow, "file management in /mnt/data, /tmp"},
    {"renameat", R::kAllow, "file management"},
    {"renameat2", R::kAllow, "file management"},
    {"mkdir", R::kAllow, "file management"},
    {"mkdirat", R::kAllow, "file management"},
    {"rmdir", R::kAllow, "file management"},
    {"link", R::kAllow, "file management"},
    {"linkat", R::kAllow, "file management"},
    {"unlink", R::kAllow, "file management"},
    {"unlinkat", R::kAllow, "file management"},
    {"symlink", R::kAllow, "file management (a link cannot leave the mount namespace)"},
    {"symlinkat", R::kAllow, "file management"},
    {"readlink", R::kAllow, "path resolution in libraries"},
    {"readlinkat", R::kAllow, "path resolution in libraries"},
    {"chmod", R::kAllow, "mode bits; setuid bits are void under nosuid"},
    {"fchmod", R::kAllow, "mode bits"},
    {"fchmodat", R::kAllow, "mode bits"},
    {"chown", R::kAllow, "only to ids the caller already has (no CAP_CHOWN)"},
    {"fchown", R::kAllow, "only to ids the caller already has"},
    {"lchown", R::kAllow, "only to ids the caller already has"},
    {"fchownat", R::kAllow, "only to ids the caller already has"},
    {"umask", R::kAllow, "file creation mask"},
    {"utime", R::kAllow, "timestamps"},
    {"utimes", R::kAllow, "timestamps"},
    {"utimensat", R::kAllow, "timestamps"},
    {"futimesat", R::kAllow, "timestamps"},
    {"getxattr", R::kAllow, "reading xattrs (ls, cp -a)"},
    {"lgetxattr", R::kAllow, "reading xattrs"},
    {"fgetxattr", R::kAllow, "reading xattrs"},
    {"listxattr", R::kAllow, "reading xattrs"},
    {"llistxattr", R::kAllow, "reading xattrs"},
    {"flistxattr", R::kAllow, "reading xattrs"},
    {"inotify_init", R::kAllow, "file watching inside the sandbox"},
    {"inotify_init1", R::kAllow, "file watching inside the sandbox"},
    {"inotify_add_watch", R::kAllow, "file watching inside the sandbox"},
    {"inotify_rm_watch", R::kAllow, "file watching inside the sandbox"},
    {"memfd_create", R::kAllow, "anonymous files (JITs, multiprocessing)"},
    // Memory.
    {"brk", R::kAllow, "heap"},
    {"mmap", R::kAllow, "heap, shared libraries; bounded by the memory cgroup"},
    {"munmap", R::kAllow, "heap"},
    {"mremap", R::kAllow, "realloc of large blocks"},
    {"mprotect", R::kAllow, "loader, JITs"},
    {"madvise", R::kAllow, "allocators return memory"},
    {"msync", R::kAllow, "mmap'd files"},
    {"mincore", R::kAllow, "allocators"},
    {"membarrier", R::kAllow, "runtimes' memory barriers"},
    {"get_mempolicy", R::kAllow, "NUMA queries by BLAS/numpy"},
    // Processes and threads (confined by the pid namespace and the pids cgroup).
    {"clone", R::kAllowNoNs, "fork and threads; namespace flags refused"},
    {"clone3", R::kEnosys, "arguments live in memory BPF cannot read; ENOSYS makes libc use clone"},
    {"fork", R::kAllow, "process creation"},
    {"vfork", R::kAllow, "posix_spawn"},
    {"execve", R::kAllow, "running programs from the read-only runtime"},
    {"execveat", R::kAllow, "running programs"},
    {"exit", R::kAllow, "thread exit"},
    {"exit_group", R::kAllow, "process exit"},
    {"wait4", R::kAllow, "reaping children"},
    {"waitid", R::kAllow, "reaping children"},
    {"kill", R::kAllow, "signals; only processes of this pid namespace are visible"},
    {"tkill", R::kAllow, "signals to own threads"},
    {"tgkill", R::kAllow, "signals to own threads"},
    {"rt_sigqueueinfo", R::kAllow, "signals with data within the sandbox"},
    {"rt_tgsigqueueinfo", R::kAllow, "signals with data within the sandbox"},
    {"pidfd_open", R::kAllow, "process handles within the pid namespace"},
    {"pidfd_send_signal", R::kAllow, "process handles within the pid namespace"},
    {"getpid", R::kAllow, "identity"},
    {"getppid", R::kAllow, "identity"},
    {"gettid", R::kAllow, "identity"},
    {"getuid", R::kAllow, "identity"},
    {"geteuid", R::kAllow, "identity"},
    {"getgid", R::kAllow, "identity"},
    {"getegid", R::kAllow, "identity"},
    {"getresuid", R::kAllow, "identity"},
    {"getresgid", R::kAllow, "identity"},
    {"getgroups", R::kAllow, "identity"},
    {"getpgrp", R::kAllow, "job control in shells"},
    {"getpgid", R::kAllow, "job control in shells"},
    {"setpgid", R::kAllow, "job control in shells"},
    {"getsid", R::kAllow, "job control in shells"},
    {"setsid", R::kAllow, "daemonizing within the sandbox"},
    {"capget", R::kAllow, "libcap queries (the set is empty)"},
    {"prctl", R::kAllow, "thread names, NO_NEW_PRIVS, PDEATHSIG; privileged options need caps we dropped"},
    {"arch_prctl", R::kAllow, "TLS setup by the loader"},
    {"set_tid_address", R::kAllow, "thread start-up"},
    {"set_robust_list", R::kAllow, "thread start-up"},
    {"get_robust_list", R::kAllow, "thread start-up"},
    {"rseq", R::kAllow, "glibc restartable sequences"},
    {"futex", R::kAllow, "locks"},
    {"futex_waitv", R::kAllow, "locks"},
    {"sched_yield", R::kAllow, "spinning runtimes"},
    {"sched_getaffinity", R::kAllow, "os.cpu_count, BLAS thread sizing"},
    {"sched_setaffinity", R::kAllow, "pinning within the cgroup's cpus"},
    {"sched_getparam", R::kAllow, "scheduler queries"},
    {"sched_getscheduler", R::kAllow, "scheduler queries"},
    {"sched_getattr", R::kAllow, "scheduler queries"},
    {"sched_get_priority_max", R::kAllow, "scheduler queries"},
    {"sched_get_priority_min", R::kAllow, "scheduler queries"},
    {"getpriority", R::kAllow, "nice queries"},
    {"setpriority", R::kAllow, "raising one's own nice value; lowering needs CAP_SYS_NICE"},
    {"getrlimit", R::kAllow, "limits queries"},
    {"setrlimit", R::kAllow, "lowering limits; raising past the hard limit needs caps"},
    {"prlimit64", R::kAllow, "limits; other pids need same uid and are in this pid ns"},
    {"getrusage", R::kAllow, "resource usage"},
    {"times", R::kAllow, "resource usage"},
    {"personality", R::kAllowPersona, "query or PER_LINUX only (no READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE)"},
    // Signals.
    {"rt_sigaction", R::kAllow, "signal handlers"},
    {"rt_sigprocmask", R::kAllow, "signal masks"},
    {"rt_sigreturn", R::kAllow, "return from handlers"},
    {"restart_syscall", R::kAllow, "kernel-issued restart of an interrupted timed wait (futex, nanosleep)"},
    {"rt_sigsuspend", R::kAllow, "waiting for signals"},
    {"rt_sigpending", R::kAllow, "signal queries"},
    {"rt_sigtimedwait", R::kAllow, "waiting for signals"},
    {"sigaltstack", R::kAllow, "Python's faulthandler"},
    {"signalfd", R::kAllow, "signal delivery as fd"},
    {"signalfd4", R::kAllow, "signal delivery as fd"},
    {"pause", R::kAllow, "waiting"},
    // Time (reading only).
    {"clock_gettime", R::kAllow, "time"},
    {"clock_getres", R::kAllow, "time"},
    {"clock_nanosleep", R::kAllow, "sleeping"},
    {"nanosleep", R::kAllow, "sleeping"},
    {"gettimeofday", R::kAllow, "time"},
    {"time", R::kAllow, "time"},
    {"getitimer", R::kAllow, "timers"},
    {"setitimer", R::kAllow, "timers (signal.alarm, timeouts)"},
    {"alarm", R::kAllow, "timers"},
    {"timer_create", R::kAllow, "POSIX timers"},
    {"timer_settime", R::kAllow, "POSIX timers"},
    {"timer_gettime", R::kAllow, "POSIX timers"},
    {"timer_getoverrun", R::kAllow, "POSIX timers"},
    {"timer_delete", R::kAllow, "POSIX timers"},
    {"timerfd_create", R::kAllow, "event loops"},
    {"timerfd_settime", R::kAllow, "event loops"},
    {"timerfd_gettime", R::kAllow, "event loops"},
    // Event loops.
    {"select", R::kAllow, "event loops"},
    {"pselect6", R::kAllow, "event loops"},
    {"poll", R::kAllow, "event loops"},
    {"ppoll", R::kAllow, "event loops"},
    {"epoll_create", R::kAllow, "event loops (asyncio)"},
    {"epoll_create1", R::kAllow, "event loops (asyncio)"},
    {"epoll_ctl", R::kAllow, "event loops"},
    {"epoll_wait", R::kAllow, "event loops"},
    {"epoll_pwait", R::kAllow, "event loops"},
    {"epoll_pwait2", R::kAllow, "event loops"},
    {"eventfd", R::kAllow, "event loops"},
    {"eventfd2", R::kAllow, "event loops"},
    // Sockets (the network namespace holds only lo).
    {"socket", R::kAllowSocket, "AF_UNIX / AF_INET / AF_INET6; netlink: NETLINK_ROUTE only (interface lists)"},
    {"socketpair", R::kAllowSocket, "multiprocessing pipes"},
    {"bind", R::kAllow, "local servers on the sandbox's own loopback"},
    {"listen", R::kAllow, "local servers"},
    {"accept", R::kAllow, "local servers"},
    {"accept4", R::kAllow, "local servers"},
    {"connect", R::kAllow, "clients; only lo exists"},
    {"shutdown", R::kAllow, "sockets"},
    {"sendto", R::kAllow, "sockets"},
    {"recvfrom", R::kAllow, "sockets"},
    {"sendmsg", R::kAllow, "sockets, the agent channel"},
    {"recvmsg", R::kAllow, "sockets, the agent channel"},
    {"sendmmsg", R::kAllow, "sockets (glibc resolver)"},
    {"recvmmsg", R::kAllow, "sockets"},
    {"getsockname", R::kAllow, "sockets"},
    {"getpeername", R::kAllow, "sockets"},
    {"setsockopt", R::kAllow, "sockets"},
    {"getsockopt", R::kAllow, "sockets"},
    // System V / POSIX IPC (private IPC namespace).
    {"shmget", R::kAllow, "IPC namespace is private"},
    {"shmat", R::kAllow, "IPC namespace is private"},
    {"shmdt", R::kAllow, "IPC namespace is private"},
    {"shmctl", R::kAllow, "IPC namespace is private"},
    {"semget", R::kAllow, "IPC namespace is private (multiprocessing locks)"},
    {"semop", R::kAllow, "IPC namespace is private"},
    {"semtimedop", R::kAllow, "IPC namespace is private"},
    {"semctl", R::kAllow, "IPC namespace is private"},
    {"msgget", R::kAllow, "IPC namespace is private"},
    {"msgsnd", R::kAllow, "IPC namespace is private"},
    {"msgrcv", R::kAllow, "IPC namespace is private"},
    {"msgctl", R::kAllow, "IPC namespace is private"},
    {"mq_open", R::kAllow, "IPC namespace is private"},
    {"mq_unlink", R::kAllow, "IPC namespace is private"},
    {"mq_timedsend", R::kAllow, "IPC namespace is private"},
    {"mq_timedreceive", R::kAllow, "IPC namespace is private"},
    {"mq_notify", R::kAllow, "IPC namespace is private"},
    {"mq_getsetattr", R::kAllow, "IPC namespace is private"},
    // Misc information.
    {"uname", R::kAllow, "platform module; hostname is the sandbox's"},
    {"sysinfo", R::kAllow, "memory queries"},
    {"getrandom", R::kAllow, "os.urandom, hash seeds"},
    {"getcpu", R::kAllow, "runtimes"},
};

constexpr unsigned long kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                          CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;

// ioctl: allowed unless the low 32 bits of the request (all the kernel looks at) are one
// of kDeniedIoctls. libseccomp has neither a masked "not equal" nor two comparisons of
// one argument in a rule, so the allowed set is written as a union of single masked
// compares: "some bit on which all denied values agree is flipped", or "every such
// bit agrees and the differing bits form a value that is not denied".
constexpr uint32_t kDeniedIoctls[] = {TIOCSTI, TIOCLINUX};  // terminal input injection

int add_ioctl_rules(scmp_filter_ctx ctx, int nr) {
  uint32_t all_and = ~0u, all_or = 0;
  for (uint32_t d : kDeniedIoctls) {
    all_and &= d;
    all_or |= d;
  }
  const uint32_t differ = all_and ^ all_or;  // bits on which the denied values disagree
  for (int bit = 0; bit < 32; ++bit) {
    const uint32_t m = 1u << bit;
    if (differ & m) continue;
    scmp_datum_t flipped = (all_and & m) ? 0 : m;
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A1(SCMP_CMP_MASKED_EQ, m, flipped)); rc != 0)
      return rc;
  }
  // Enumerate the values that agree on the common bits (2^popcount(differ) of them).
  for (uint32_t sub = differ;; sub = (sub - 1) & differ) {
    uint32_t value = (all_and & ~differ) | sub;
    bool denied = false;
    for (uint32_t d : kDeniedIoctls) denied |= d == value;
    if (!denied) {
      if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, value)); rc != 0)
        return rc;
    }
    if (sub == 0) break;
  }
  return 0;
}

int add_rule(scmp_filter_ctx ctx, int nr, const SeccompEntry& e) {
  switch (e.rule) {
    case R::kAllow:
      return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    case R::kEnosys:
      return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
    case R::kAllowNoNs:
      return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, kNamespaceFlags, 0));
    case R::kAllowSocket: {
      for (scmp_datum_t family : {AF_UNIX, AF_INET, AF_INET6}) {
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, family));
        if (rc != 0) return rc;
      }
      // Interface listings (glibc's getifaddrs, if_nameindex, AI_ADDRCONFIG; libuv's, Go's) read
      // the sandbox's own network namespace over NETLINK_ROUTE; no sandbox holds CAP_NET_ADMIN,
      // which every change asks for. socketpair() has no netlink (the kernel refuses it).
      return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 2, SCMP_A0(SCMP_CMP_EQ, AF_NETLINK),
                              SCMP_A2(SCMP_CMP_EQ, NETLINK_ROUTE));
    }
    case R::kAllowIoctl:
      return add_ioctl_rules(ctx, nr);
    case R::kAllowPersona: {
      int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, 0xffffffffu));
      if (rc != 0) return rc;
      return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, PER_LINUX));
    }
  }
  return -EINVAL;
}

}  // namespace

const SeccompEntry* seccomp_policy(size_t* count) {
  *count = sizeof kPolicy / sizeof kPolicy[0];
  return kPolicy;
}

Result<SeccompProgram> compile_seccomp_policy() {
  return compile_seccomp_filter(SCMP_ACT_ERRNO(EPERM), [](void* ctx) {
    for (const SeccompEntry& e : kPolicy) {
      int nr = seccomp_syscall_resolve_name(e.name);
      if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture (e.g. renamed)
      if (int rc = add_rule(static_cast<scmp_filter_ctx>(ctx), nr, e); rc != 0) return rc;
    }
    return 0;
  });
}

Result<SeccompProgram> compile_seccomp_filter(uint32_t default_action, const std::function<int(void* ctx)>& add_rules) {
  scmp_filter_ctx ctx = seccomp_init(default_action);
  if (ctx == nullptr) return Error{ENOMEM, "seccomp_init"};
  struct Release {
    scmp_filter_ctx c;
    ~Release() { seccomp_release(c); }
  } release{ctx};
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); rc != 0)
    return Error{-rc, "seccomp badarch action"};
  if (int rc = add_rules(ctx); rc != 0) return Error{-rc, "seccomp_rule_add"};
  // A binary tree of syscall numbers instead of libseccomp's default linear chain: the kernel runs
  // the program for every syscall number when it loads it (its action cache), and for every call
  // the cache does not answer; a chain walks the whole allowlist for each (bench/seccomp).
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2); rc != 0) return Error{-rc, "seccomp binary-tree attribute"};
  // seccomp_export_bpf writes to an fd; a memfd keeps it in memory.
  UniqueFd mem(memfd_create("sandpool-seccomp", MFD_CLOEXEC));
  if (!mem) return errno_error("memfd_create(seccomp)");
  if (int rc = seccomp_export_bpf(ctx, mem.get()); rc != 0) return Error{-rc, "seccomp_export_bpf"};
  off_t size = lseek(mem.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0) return Error{kEInvalid, "seccomp program size"};
  const size_t count = static_cast<size_t>(size) / sizeof(sock_filter);
  SeccompProgram out;
  out.insns.resize(count);
  const size_t bytes = count * sizeof(sock_filter);
  if (pread(mem.get(), out.insns.data(), bytes, 0) != static_cast<ssize_t>(bytes)) return errno_error("read seccomp program");
  return out;
}

}  // namespace sp
