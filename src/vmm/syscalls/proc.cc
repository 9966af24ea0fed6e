// Process syscalls: exit, ids, uname, arch_prctl, set_tid_address, robust lists, rseq, rlimits,
// affinity, prctl, sysinfo, and the clear refusals of clone/fork/exec/wait (one thread, one process).
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/times.h>
#include <sys/utsname.h>

#include <atomic>
#include <cstring>

#include "util/log.h"
#include "vmm/syscalls/dispatch.h"

namespace sp::vmm {
namespace {

// SAFETY (whole file): guest buffers are written only through g.mem.copy_out()/write(), which
// check the whole range against guest user memory.

constexpr uint64_t kArchSetGs = 0x1001, kArchSetFs = 0x1002, kArchGetFs = 0x1003, kArchGetGs = 0x1004;

int64_t sys_exit_group(Guest& g, const SyscallArgs& a) {
  g.exited = true;
  g.exit_code = static_cast<int>(a.a[0] & 0xff);
  return 0;
}

int64_t sys_getpid(Guest& g, const SyscallArgs&) { return g.pid; }
int64_t sys_getppid(Guest&, const SyscallArgs&) { return 1; }
int64_t sys_getuid(Guest& g, const SyscallArgs&) { return g.uid; }
int64_t sys_getgid(Guest& g, const SyscallArgs&) { return g.gid; }
int64_t sys_zero(Guest&, const SyscallArgs&) { return 0; }
int64_t sys_eperm(Guest&, const SyscallArgs&) { return -EPERM; }
int64_t sys_echild(Guest&, const SyscallArgs&) { return -ECHILD; }

int64_t sys_refused(Guest& g, const SyscallArgs& a) {
  global_counters().refused_syscalls.fetch_add(1, std::memory_order_relaxed);
  static std::atomic<bool> warned{false};  // once per process, unless tracing
  if (!warned.exchange(true) || g.trace)
    LOG_WARN("vm: %s refused: the micro-VM runs one single-threaded process (no threads, fork or exec)",
             syscall_name(a.nr));
  return -ENOSYS;
}

int64_t sys_uname(Guest& g, const SyscallArgs& a) {
  struct utsname host;
  uname(&host);
  struct utsname u {};
  std::strcpy(u.sysname, "Linux");
  std::strcpy(u.nodename, "sandpool");
  std::memcpy(u.release, host.release, sizeof u.release);
  std::memcpy(u.version, host.version, sizeof u.version);
  std::strcpy(u.machine, "x86_64");
  std::strcpy(u.domainname, "(none)");
  return g.mem.write(a.a[0], u) ? 0 : -EFAULT;
}

int64_t sys_arch_prctl(Guest& g, const SyscallArgs& a) {
  uint64_t v = a.a[1];
  switch (a.a[0]) {
    case kArchSetFs:
      if (v >= (1ull << 47)) return -EPERM;  // must be a canonical user address
      g.set_fs_base(v);
      return 0;
    case kArchGetFs: return g.mem.write(v, static_cast<uint64_t>(g.run->s.regs.sregs.fs.base)) ? 0 : -EFAULT;
    case kArchSetGs:
      if (v >= (1ull << 47)) return -EPERM;
      g.run->s.regs.sregs.gs.base = v;
      g.run->kvm_dirty_regs |= KVM_SYNC_X86_SREGS;
      return 0;
    case kArchGetGs: return g.mem.write(v, static_cast<uint64_t>(g.run->s.regs.sregs.gs.base)) ? 0 : -EFAULT;
    default: return -EINVAL;
  }
}

int64_t sys_set_tid_address(Guest& g, const SyscallArgs&) { return g.pid; }

int64_t sys_set_robust_list(Guest&, const SyscallArgs& a) { return a.a[1] == 24 ? 0 : -EINVAL; }

// rseq: accepted; with one vCPU and one thread no critical section can be disturbed, so the only
// duty is to publish cpu_id 0.
int64_t sys_rseq(Guest& g, const SyscallArgs& a) {
  if (a.a[2] & 1) return 0;  // RSEQ_FLAG_UNREGISTER
  if (a.a[1] < 32 || (a.a[0] & 31)) return -EINVAL;
  uint32_t ids[2] = {0, 0};  // cpu_id_start, cpu_id
  return g.mem.copy_out(a.a[0], ids, sizeof ids) ? 0 : -EFAULT;
}

rlimit limit_for(Guest& g, uint64_t res) {
  switch (res) {
    case RLIMIT_STACK: return {kStackBytes, kStackBytes};
    case RLIMIT_NOFILE: return {FdTable::kMaxFds, FdTable::kMaxFds};
    case RLIMIT_AS:
    case RLIMIT_DATA: return {g.mem.size(), g.mem.size()};
    case RLIMIT_NPROC: return {1, 1};
    case RLIMIT_CORE: return {0, 0};
    default: return {RLIM_INFINITY, RLIM_INFINITY};
  }
}

int64_t sys_prlimit64(Guest& g, const SyscallArgs& a) {
  if (a.a[0] != 0 && static_cast<int64_t>(a.a[0]) != g.pid) return -ESRCH;
  if (a.a[1] >= RLIM_NLIMITS) return -EINVAL;
  if (a.a[2] && !g.mem.user_range_ok(a.a[2], sizeof(rlimit))) return -EFAULT;
  if (a.a[3] && !g.mem.write(a.a[3], limit_for(g, a.a[1]))) return -EFAULT;
  return 0;  // new limits are accepted and ignored: the VMM enforces its own
}

int64_t sys_getrlimit(Guest& g, const SyscallArgs& a) {
  if (a.a[0] >= RLIM_NLIMITS) return -EINVAL;
  return g.mem.write(a.a[1], limit_for(g, a.a[0])) ? 0 : -EFAULT;
}

int64_t sys_sched_getaffinity(Guest& g, const SyscallArgs& a) {
  if (a.a[1] < 8 || (a.a[1] & 7)) return -EINVAL;
  if (!g.mem.user_range_ok(a.a[2], a.a[1])) return -EFAULT;
  std::memset(g.mem.user_ptr(a.a[2], a.a[1]), 0, a.a[1]);
  g.mem.write<uint64_t>(a.a[2], 1);  // one CPU
  return 8;
}

int64_t sys_getcpu(Guest& g, const SyscallArgs& a) {
  if (a.a[0] && !g.mem.write<uint32_t>(a.a[0], 0)) return -EFAULT;
  if (a.a[1] && !g.mem.write<uint32_t>(a.a[1], 0)) return -EFAULT;
  return 0;
}

int64_t sys_prctl(Guest& g, const SyscallArgs& a) {
  switch (a.a[0]) {
    case 1: return a.a[1] <= 64 ? 0 : -EINVAL;  // PR_SET_PDEATHSIG: the guest outlives no parent
    case 2: return g.mem.write<int32_t>(a.a[1], 0) ? 0 : -EFAULT;  // PR_GET_PDEATHSIG
    case 38: return 0;  // PR_SET_NO_NEW_PRIVS: trivially true, there is no exec
    case 39: return 1;  // PR_GET_NO_NEW_PRIVS
    case 15: return 0;  // PR_SET_NAME
    case 16: return g.mem.copy_out(a.a[1], "guest\0\0\0\0\0\0\0\0\0\0\0", 16) ? 0 : -EFAULT;  // PR_GET_NAME
    default: return -EINVAL;
  }
}

int64_t sys_sysinfo(Guest& g, const SyscallArgs& a) {
  struct sysinfo s {};
  s.uptime = 1;
  s.totalram = g.mem.size();
  s.freeram = g.mem.size() - g.as.mapped_bytes();
  s.procs = 1;
  s.mem_unit = 1;
  return g.mem.write(a.a[0], s) ? 0 : -EFAULT;
}

int64_t sys_getrusage(Guest& g, const SyscallArgs& a) {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return g.mem.write(a.a[1], u) ? 0 : -EFAULT;
}

int64_t sys_times(Guest& g, const SyscallArgs& a) {
  struct tms t {};
  clock_t r = times(&t);
  if (a.a[0] && !g.mem.write(a.a[0], t)) return -EFAULT;
  return r;
}

int64_t sys_getgroups(Guest&, const SyscallArgs&) { return 0; }

}  // namespace

void register_proc_syscalls(SyscallTable& t) {
  t.add(24, "sched_yield", sys_zero);
  t.add(39, "getpid", sys_getpid);
  t.add(56, "clone", sys_refused);
  t.add(57, "fork", sys_refused);
  t.add(58, "vfork", sys_refused);
  t.add(59, "execve", sys_refused);
  t.add(60, "exit", sys_exit_group);
  t.add(61, "wait4", sys_echild);
  t.add(63, "uname", sys_uname);
  t.add(97, "getrlimit", sys_getrlimit);
  t.add(98, "getrusage", sys_getrusage);
  t.add(99, "sysinfo", sys_sysinfo);
  t.add(100, "times", sys_times);
  t.add(102, "getuid", sys_getuid);
  t.add(104, "getgid", sys_getgid);
  t.add(105, "setuid", sys_eperm);
  t.add(106, "setgid", sys_eperm);
  t.add(107, "geteuid", sys_getuid);
  t.add(108, "getegid", sys_getgid);
  t.add(109, "setpgid", sys_zero);
  t.add(110, "getppid", sys_getppid);
  t.add(111, "getpgrp", sys_getpid);
  t.add(112, "setsid", sys_eperm);
  t.add(115, "getgroups", sys_getgroups);
  t.add(121, "getpgid", sys_getpid);
  t.add(124, "getsid", sys_getpid);
  t.add(157, "prctl", sys_prctl);
  t.add(158, "arch_prctl", sys_arch_prctl);
  t.add(160, "setrlimit", sys_zero);
  t.add(186, "gettid", sys_getpid);
  t.add(203, "sched_setaffinity", sys_zero);
  t.add(204, "sched_getaffinity", sys_sched_getaffinity);
  t.add(218, "set_tid_address", sys_set_tid_address);
  t.add(231, "exit_group", sys_exit_group);
  t.add(247, "waitid", sys_echild);
  t.add(273, "set_robust_list", sys_set_robust_list);
  t.add(302, "prlimit64", sys_prlimit64);
  t.add(309, "getcpu", sys_getcpu);
  t.add(322, "execveat", sys_refused);
  t.add(334, "rseq", sys_rseq);
  t.add(435, "clone3", sys_refused);
}

}  // namespace sp::vmm
