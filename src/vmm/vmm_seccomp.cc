// The VMM process's seccomp allowlist (pool_template.h) and its compilation with libseccomp.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <string>

#include "util/unique_fd.h"
#include "vmm/pool_template.h"

namespace sp::vmm {
namespace {

// Every call here is made by the VMM itself; what the guest asks for arrives as a VM exit and is
// implemented by src/vmm/syscalls on top of these. ioctl is limited below (KVM and a few file ones).
constexpr VmmSeccompEntry kPolicy[] = {
    {"read", "guest I/O on its descriptors; KVM stats"},
    {"write", "guest I/O; watcher control socket"},
    {"readv", "guest readv"},
    {"writev", "guest writev"},
    {"pread64", "guest pread; ELF loading"},
    {"pwrite64", "guest pwrite"},
    {"lseek", "guest lseek"},
    {"close", "descriptor lifetime"},
    {"close_range", "guest close_range"},
    {"dup", "guest dup"},
    {"dup3", "guest dup2/dup3"},
    {"fcntl", "descriptor flags, F_SETOWN/F_SETSIG for guest O_ASYNC"},
    {"flock", "guest flock"},
    {"ioctl", "KVM ioctls (type 0xAE) and FIONREAD/FIONBIO/TCGETS/TIOCGWINSZ for the guest"},
    {"openat", "libc internals"},
    {"openat2", "guest opens, RESOLVE_NO_MAGICLINKS"},
    {"newfstatat", "guest stat"},
    {"fstat", "guest fstat"},
    {"statx", "guest statx"},
    {"statfs", "guest statfs"},
    {"fstatfs", "guest fstatfs"},
    {"getdents64", "guest directory listing"},
    {"readlinkat", "guest readlink"},
    {"mkdirat", "guest mkdir in /mnt/data and /tmp"},
    {"unlinkat", "guest unlink/rmdir"},
    {"renameat", "guest rename"},
    {"renameat2", "guest rename"},
    {"faccessat", "guest access"},
    {"faccessat2", "guest access"},
    {"ftruncate", "guest ftruncate; capture files"},
    {"fallocate", "guest memory zeroing (hole punch)"},
    {"fsync", "guest fsync"},
    {"fdatasync", "guest fdatasync"},
    {"fchdir", "guest chdir"},
    {"chdir", "guest chdir"},
    {"getcwd", "guest getcwd"},
    {"umask", "guest umask"},
    {"mmap", "guest memory (memfd), clones' private views, malloc"},
    {"munmap", "guest memory"},
    {"mprotect", "malloc, thread stacks"},
    {"madvise", "guest memory release"},
    {"mremap", "malloc"},
    {"brk", "malloc"},
    {"memfd_create", "guest memory, capture files"},
    {"socketpair", "guest socketpair (AF_UNIX)"},
    {"sendmsg", "guest send on given sockets"},
    {"recvmsg", "guest recv on given sockets"},
    {"sendto", "guest send"},
    {"recvfrom", "guest recv"},
    {"shutdown", "guest shutdown"},
    {"getsockopt", "guest getsockopt"},
    {"setsockopt", "guest setsockopt"},
    {"getsockname", "guest getsockname"},
    {"getpeername", "guest getpeername"},
    {"poll", "guest poll; watcher"},
    {"ppoll", "guest ppoll"},
    {"select", "guest select"},
    {"pselect6", "guest pselect"},
    {"epoll_create1", "guest epoll"},
    {"epoll_ctl", "guest epoll"},
    {"epoll_wait", "guest epoll"},
    {"epoll_pwait", "guest epoll"},
    {"eventfd2", "guest eventfd"},
    {"pipe2", "guest pipe"},
    {"clock_gettime", "time"},
    {"clock_getres", "time"},
    {"gettimeofday", "time"},
    {"clock_nanosleep", "guest sleep"},
    {"nanosleep", "guest sleep"},
    {"getrandom", "guest getrandom; AT_RANDOM"},
    {"uname", "guest uname"},
    {"sysinfo", "guest sysinfo"},
    {"times", "guest times"},
    {"getrusage", "guest getrusage"},
    {"prlimit64", "guest getrlimit"},
    {"sched_getaffinity", "guest CPU count"},
    {"sched_yield", "spin waits"},
    {"getcpu", "guest getcpu"},
    {"rt_sigaction", "kick and SIGIO handlers"},
    {"rt_sigprocmask", "signal masks"},
    {"rt_sigreturn", "return from the kick handler"},
    {"sigaltstack", "libc"},
    {"setitimer", "vm-run --timeout-ms"},
    {"getpid", "own pid (F_SETOWN)"},
    {"gettid", "own thread (F_SETOWN_EX)"},
    {"getppid", "libc"},
    {"getuid", "ids"},
    {"geteuid", "ids"},
    {"getgid", "ids"},
    {"getegid", "ids"},
    {"tgkill", "kick the vCPU thread out of KVM_RUN"},
    {"futex", "the watcher thread's mutex"},
    {"set_robust_list", "threads"},
    {"rseq", "threads"},
    {"exit", "thread exit"},
    {"exit_group", "process exit"},
    {"restart_syscall", "signals"},
};

constexpr unsigned long kFileIoctls[] = {FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, TCGETS, TIOCGWINSZ};

// The calls of a pool VMM child's isolation after its request (pool_template.cc isolate()), made
// under the ahead filter and refused by the lock (compile_vmm_isolation_lock()).
constexpr VmmSeccompEntry kIsolationCalls[] = {
    {"unshare", "the cgroup namespace, once in the sandbox's cgroup (CLONE_NEWCGROUP only)"},
    {"chown", "/mnt/data for the sandbox's uid"},
    {"fchownat", "(libc's chown)"},
    {"setresgid", "the sandbox's gid (this thread)"},
    {"setresuid", "the sandbox's uid (this thread)"},
    {"capset", "no capabilities left"},
    {"prctl", "no_new_privs, the parent-death signal, ambient capabilities (those options only)"},
    {"seccomp", "loading the lock itself"},
    {"sched_setscheduler", "out of the spare's SCHED_IDLE at the request"},
};

uint32_t refusal() { return getenv("SANDPOOL_VMM_SECCOMP_LOG") ? SCMP_ACT_LOG : SCMP_ACT_ERRNO(EPERM); }

// The isolation calls' rules in the ahead filter: unshare and prctl limited to what isolate() does.
int add_isolation_rule(scmp_filter_ctx ctx, int nr, const char* name) {
  if (std::string(name) == "unshare")
    return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, CLONE_NEWCGROUP));
  if (std::string(name) == "prctl") {
    int rc = 0;
    for (int option : {PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, PR_CAP_AMBIENT})
      if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(option)));
    return rc;
  }
  return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
}

Result<SeccompProgram> compile_policy(bool with_isolation_calls) {
  return compile_seccomp_filter(refusal(), [with_isolation_calls](void* raw) {
    auto ctx = static_cast<scmp_filter_ctx>(raw);
    for (const VmmSeccompEntry& e : kPolicy) {
      int nr = seccomp_syscall_resolve_name(e.name);
      if (nr == __NR_SCMP_ERROR) continue;
      int rc;
      if (std::string(e.name) == "ioctl") {
        // KVM's ioctl type byte is 0xAE (bits 8..15 of the request).
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00u, KVMIO << 8));
        for (unsigned long req : kFileIoctls) {
          if (rc == 0) rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, req));
        }
      } else {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
      }
      if (rc != 0) return rc;
    }
    for (const VmmSeccompEntry& e : kIsolationCalls) {
      int nr = seccomp_syscall_resolve_name(e.name);
      if (nr == __NR_SCMP_ERROR || !with_isolation_calls) continue;
      if (int rc = add_isolation_rule(ctx, nr, e.name); rc != 0) return rc;
    }
    return 0;
  });
}

}  // namespace

Result<SeccompProgram> compile_vmm_seccomp_policy() { return compile_policy(false); }

Result<SeccompProgram> compile_vmm_ahead_policy() { return compile_policy(true); }

Result<SeccompProgram> compile_vmm_isolation_lock() {
  return compile_seccomp_filter(SCMP_ACT_ALLOW, [](void* ctx) {
    for (const VmmSeccompEntry& e : kIsolationCalls) {
      int nr = seccomp_syscall_resolve_name(e.name);
      if (nr == __NR_SCMP_ERROR) continue;
      if (int rc = seccomp_rule_add(static_cast<scmp_filter_ctx>(ctx), refusal(), nr, 0); rc != 0) return rc;
    }
    return 0;
  });
}

bool kvm_usable(std::string* why) {
  UniqueFd kvm(open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) {
    *why = std::string("/dev/kvm: ") + strerror(errno);
    return false;
  }
  int v = ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  if (v != KVM_API_VERSION) {
    *why = "/dev/kvm: unexpected API version " + std::to_string(v);
    return false;
  }
  UniqueFd vm(ioctl(kvm.get(), KVM_CREATE_VM, 0));
  if (!vm) {
    *why = std::string("KVM_CREATE_VM: ") + strerror(errno);
    return false;
  }
  *why = "KVM_CREATE_VM works";
  return true;
}

}  // namespace sp::vmm
