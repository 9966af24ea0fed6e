// Guest signals: rt_sigaction/rt_sigprocmask/sigaltstack bookkeeping, kill/tgkill to self, frame
// construction for delivery and rt_sigreturn. FPU/vector state is saved on the VMM side
// (KVM_GET_XSAVE) across a handler, not in the guest frame.
#include "vmm/syscalls/signal.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <vector>

#include "util/log.h"
#include "vmm/syscalls/async_io.h"
#include "vmm/syscalls/dispatch.h"

namespace sp::vmm {
namespace {

// SAFETY (whole file): all guest memory is reached through g.mem.copy_in/copy_out/read/write,
// which check each range against guest user memory; a failed check aborts delivery.

constexpr uint64_t bit(int sig) { return 1ull << (sig - 1); }
constexpr uint64_t kUnblockable = bit(SIGKILL) | bit(SIGSTOP);
constexpr uint64_t kSaOnStack = 0x08000000, kSaResetHand = 0x80000000, kSaNoDefer = 0x40000000;
constexpr uint64_t kSigcontextOff = 40, kSigmaskOff = 40 + 256, kSiginfoOff = 8 + 304, kFrameBytes = 8 + 304 + 128;
constexpr size_t kMaxSavedFpu = 8;


bool default_ignores(int sig) {
  return sig == SIGCHLD || sig == SIGURG || sig == SIGWINCH || sig == SIGCONT || sig == SIGSTOP ||
         sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

void kill_guest(Guest& g, int sig) {
  g.exited = true;
  g.term_signal = sig;
  g.exit_code = 128 + sig;
  global_counters().guests_killed.fetch_add(1, std::memory_order_relaxed);
}

bool on_altstack(const Guest& g, uint64_t sp) {
  return g.sig.altstack_flags == 0 && sp > g.sig.altstack_sp && sp - g.sig.altstack_sp <= g.sig.altstack_size;
}

// Writes the frame; false if the stack is not guest memory.
bool write_frame(Guest& g, const SignalInfo& info, const SigAction& act, uint64_t sp) {
  const kvm_regs& r = *g.regs;
  uint64_t sc[32] = {r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx,
                     r.rax, r.rcx, r.rsp, r.rip, r.rflags,
                     uint64_t{0x2b} | (uint64_t{0x23} << 48),  // cs, gs, fs, ss
                     info.error_code, info.trapno, g.sig.blocked, info.cr2, 0 /* fpstate */};
  uint64_t uc_head[5] = {2 /* UC_SIGCONTEXT_SS */, 0, g.sig.altstack_sp,
                         static_cast<uint64_t>(static_cast<uint32_t>(g.sig.altstack_flags)), g.sig.altstack_size};
  uint8_t si[128] = {};
  std::memcpy(si, &info.signo, 4);
  std::memcpy(si + 8, &info.code, 4);
  if (info.synchronous) {
    std::memcpy(si + 16, &info.addr, 8);
  } else {
    uint32_t ids[2] = {static_cast<uint32_t>(g.pid), static_cast<uint32_t>(g.uid)};
    std::memcpy(si + 16, ids, 8);
  }
  return g.mem.write(sp, act.restorer) && g.mem.copy_out(sp + 8, uc_head, sizeof uc_head) &&
         g.mem.copy_out(sp + 8 + kSigcontextOff, sc, 256) && g.mem.write(sp + 8 + kSigmaskOff, g.sig.blocked) &&
         g.mem.copy_out(sp + kSiginfoOff, si, sizeof si);
}

}  // namespace

SignalInfo signal_for_exception(uint32_t vector, uint32_t error_code, uint64_t cr2) {
  SignalInfo s;
  s.synchronous = true;
  s.trapno = vector;
  s.error_code = error_code;
  switch (vector) {
    case 0: s.signo = SIGFPE, s.code = FPE_INTDIV; break;
    case 1: case 3: s.signo = SIGTRAP, s.code = SI_KERNEL; break;
    case 6: s.signo = SIGILL, s.code = ILL_ILLOPN; break;
    case 7: case 16: case 19: s.signo = SIGFPE, s.code = FPE_FLTINV; break;
    case 12: case 17: s.signo = SIGBUS, s.code = BUS_ADRALN; break;
    case 14:
      s.signo = SIGSEGV;
      s.code = (error_code & 1) ? SEGV_ACCERR : SEGV_MAPERR;
      s.addr = cr2;
      s.cr2 = cr2;
      break;
    default: s.signo = SIGSEGV, s.code = SI_KERNEL; break;  // #GP, #NP, #SS, #TS, #OF, #BR, ...
  }
  return s;
}

void deliver_signal(Guest& g, const SignalInfo& info) {
  int sig = info.signo;
  if (sig < 1 || sig > 64) return;
  SigAction act = g.sig.actions[sig];
  bool blocked = g.sig.blocked & bit(sig);
  if (info.synchronous && (blocked || act.handler == 1)) act.handler = 0;  // forced: default action
  if (act.handler == 1 || (act.handler == 0 && default_ignores(sig))) return;
  if (act.handler == 0) return kill_guest(g, sig);
  // rt_sigaction takes any address, as Linux does; resuming at a non-canonical one would make the
  // next VM entry fail (as a forged rt_sigreturn frame would). On Linux the return to it faults.
  if (act.handler >= (1ull << 47)) return kill_guest(g, SIGSEGV);

  uint64_t sp = g.regs->rsp - 128;  // skip the red zone
  if ((act.flags & kSaOnStack) && g.sig.altstack_flags == 0 && !on_altstack(g, g.regs->rsp))
    sp = g.sig.altstack_sp + g.sig.altstack_size;
  sp = ((sp - kFrameBytes) & ~uint64_t{15}) - 8;
  if (!write_frame(g, info, act, sp)) return kill_guest(g, SIGSEGV);

  auto fpu = std::make_unique<kvm_xsave>();
  if (g.vcpu && g.vcpu->get_xsave(fpu.get()).ok()) {
    if (g.saved_fpu.size() >= kMaxSavedFpu) g.saved_fpu.erase(g.saved_fpu.begin());
    g.saved_fpu.push_back(std::move(fpu));
  }
  g.sig.blocked |= act.mask & ~kUnblockable;
  if (!(act.flags & kSaNoDefer)) g.sig.blocked |= bit(sig);
  if (act.flags & kSaResetHand) g.sig.actions[sig] = SigAction{};
  kvm_regs& r = *g.regs;
  r.rip = act.handler;
  r.rsp = sp;
  r.rdi = static_cast<uint64_t>(sig);
  r.rsi = sp + kSiginfoOff;
  r.rdx = sp + 8;
  r.rax = 0;
  r.rflags &= ~uint64_t{0x500};  // TF, DF
  global_counters().signals_delivered.fetch_add(1, std::memory_order_relaxed);
}

bool signal_waiting(const Guest& g) {
  if ((g.sig.pending & ~g.sig.blocked) != 0 || (io_ready_pending() && !g.async_fds.empty())) return true;
  if (g.host_kill && g.host_kill->load(std::memory_order_acquire)) return true;
  return g.host_interrupt && !(g.sig.blocked & bit(SIGINT)) && g.host_interrupt->load(std::memory_order_acquire);
}

int kick_signal_number() { return SIGRTMIN + 3; }

GuestWait::GuestWait(const Guest& g) {
  sigset_t host;
  sigemptyset(&host);
  sigaddset(&host, io_signal());
  sigaddset(&host, kick_signal_number());
  sigaddset(&host, SIGINT);   // vm-run's Ctrl-C and timeout call Vm::interrupt() from handlers
  sigaddset(&host, SIGALRM);
  pthread_sigmask(SIG_BLOCK, &host, &old_);
  interrupted_ = signal_waiting(g);
}

GuestWait::~GuestWait() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

int GuestWait::poll(pollfd* fds, nfds_t n, const timespec* timeout) const {
  int rc = ppoll(fds, n, timeout, &old_);
  return rc < 0 ? -errno : rc;
}

int64_t ns_of(const timespec& t) {
  const int64_t s = t.tv_sec < (int64_t{1} << 32) ? static_cast<int64_t>(t.tv_sec) : int64_t{1} << 32;
  return s * 1000000000 + t.tv_nsec;
}

timespec ts_of(int64_t ns) { return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)}; }

int64_t wait_until(const Guest& g, clockid_t clock, int64_t end_ns) {
  GuestWait w(g);
  if (w.interrupted()) return -EINTR;  // the run loop delivers it after this call
  for (;;) {
    timespec now;
    clock_gettime(clock, &now);
    if (ns_of(now) >= end_ns) return 0;
    timespec left = ts_of(end_ns - ns_of(now));
    // A signal; any other failure (ENOMEM) too: the guest's caller sees EINTR and may retry.
    if (w.poll(nullptr, 0, &left) < 0) return -EINTR;
  }
}

int64_t wait_ready(const Guest& g, int hfd, short events, int flags) {
  if (flags & MSG_DONTWAIT) return 0;
  pollfd p{hfd, events, 0};
  if (::poll(&p, 1, 0) != 0) return 0;  // ready, an end or an error: the call answers at once
  int fl = fcntl(hfd, F_GETFL);
  if (fl < 0 || (fl & O_NONBLOCK)) return 0;
  // A socket's SO_RCVTIMEO / SO_SNDTIMEO bound the wait as they bound the call: EAGAIN after it.
  timeval tv{};
  socklen_t len = sizeof tv;
  timespec limit{};
  const bool timed = getsockopt(hfd, SOL_SOCKET, events == POLLIN ? SO_RCVTIMEO : SO_SNDTIMEO, &tv, &len) == 0 &&
                     (tv.tv_sec > 0 || tv.tv_usec > 0);
  if (timed) limit = timespec{tv.tv_sec, tv.tv_usec * 1000};
  GuestWait w(g);
  if (w.interrupted()) return -EINTR;
  int rc = w.poll(&p, 1, timed ? &limit : nullptr);
  return rc < 0 ? rc : rc == 0 ? -EAGAIN : 0;
}

void deliver_pending(Guest& g) {
  uint64_t ready = g.sig.pending & ~g.sig.blocked;
  if (!ready || g.exited) return;
  int sig = __builtin_ctzll(ready) + 1;
  g.sig.pending &= ~bit(sig);
  SignalInfo info;
  info.signo = sig;
  info.code = SI_USER;
  deliver_signal(g, info);
}

namespace {

int64_t sys_rt_sigaction(Guest& g, const SyscallArgs& a) {
  uint64_t sig = a.a[0];
  if (a.a[3] != 8 || sig < 1 || sig > 64) return -EINVAL;
  SigAction next;
  if (a.a[1]) {
    if (sig == SIGKILL || sig == SIGSTOP) return -EINVAL;
    if (!g.mem.read(a.a[1], &next)) return -EFAULT;
  }
  if (a.a[2] && !g.mem.write(a.a[2], g.sig.actions[sig])) return -EFAULT;
  if (a.a[1]) g.sig.actions[sig] = next;
  return 0;
}

int64_t sys_rt_sigprocmask(Guest& g, const SyscallArgs& a) {
  if (a.a[3] != 8) return -EINVAL;
  uint64_t set = 0;
  if (a.a[1] && !g.mem.read(a.a[1], &set)) return -EFAULT;
  if (a.a[2] && !g.mem.write(a.a[2], g.sig.blocked)) return -EFAULT;
  if (!a.a[1]) return 0;
  switch (a.a[0]) {
    case SIG_BLOCK: g.sig.blocked |= set; break;
    case SIG_UNBLOCK: g.sig.blocked &= ~set; break;
    case SIG_SETMASK: g.sig.blocked = set; break;
    default: return -EINVAL;
  }
  g.sig.blocked &= ~kUnblockable;
  return 0;
}

int64_t sys_rt_sigreturn(Guest& g, const SyscallArgs&) {
  kvm_regs& r = *g.regs;
  uint64_t uc = r.rsp;  // the handler's `ret` popped pretcode
  uint64_t sc[23];
  uint64_t mask;
  // A frame the guest forged may hold any values: a non-canonical rip or rsp would make the next
  // VM entry fail, so it is treated like Linux treats a bad frame (SIGSEGV).
  if (!g.mem.copy_in(sc, uc + kSigcontextOff, sizeof sc) || !g.mem.read(uc + kSigmaskOff, &mask) ||
      sc[16] >= (1ull << 47) || sc[15] >= (1ull << 47)) {
    kill_guest(g, SIGSEGV);
    return kNoReturnValue;
  }
  r.r8 = sc[0], r.r9 = sc[1], r.r10 = sc[2], r.r11 = sc[3], r.r12 = sc[4], r.r13 = sc[5], r.r14 = sc[6];
  r.r15 = sc[7], r.rdi = sc[8], r.rsi = sc[9], r.rbp = sc[10], r.rbx = sc[11], r.rdx = sc[12], r.rax = sc[13];
  r.rcx = sc[14], r.rsp = sc[15], r.rip = sc[16], r.rflags = sc[17];  // flags sanitized on resume
  g.sig.blocked = mask & ~kUnblockable;
  if (!g.saved_fpu.empty()) {
    if (g.vcpu) (void)g.vcpu->set_xsave(*g.saved_fpu.back());
    g.saved_fpu.pop_back();
  }
  return kNoReturnValue;
}

int64_t sys_sigaltstack(Guest& g, const SyscallArgs& a) {
  uint64_t cur[3] = {g.sig.altstack_sp,
                     static_cast<uint64_t>(static_cast<uint32_t>(on_altstack(g, g.regs->rsp) ? 1 : g.sig.altstack_flags)),
                     g.sig.altstack_size};
  uint64_t next[3];
  if (a.a[0] && !g.mem.copy_in(next, a.a[0], sizeof next)) return -EFAULT;
  if (a.a[1] && !g.mem.copy_out(a.a[1], cur, sizeof cur)) return -EFAULT;
  if (!a.a[0]) return 0;
  if (on_altstack(g, g.regs->rsp)) return -EPERM;
  int flags = static_cast<int>(next[1] & 0xffffffff);
  if (flags & 2) {  // SS_DISABLE
    g.sig.altstack_flags = 2, g.sig.altstack_sp = 0, g.sig.altstack_size = 0;
    return 0;
  }
  if (flags & ~int{1 << 31}) return -EINVAL;  // only SS_AUTODISARM besides SS_DISABLE
  if (next[2] < 2048) return -ENOMEM;
  g.sig.altstack_sp = next[0], g.sig.altstack_size = next[2], g.sig.altstack_flags = 0;
  return 0;
}

int64_t queue_self(Guest& g, uint64_t sig) {
  if (sig > 64) return -EINVAL;
  if (sig != 0) g.sig.pending |= bit(static_cast<int>(sig));
  return 0;
}

int64_t sys_kill(Guest& g, const SyscallArgs& a) {
  int64_t pid = static_cast<int32_t>(a.a[0]);
  if (pid != g.pid && pid != 0 && pid != -1) return -ESRCH;
  return queue_self(g, a.a[1]);
}

int64_t sys_tgkill(Guest& g, const SyscallArgs& a) {
  if (static_cast<int32_t>(a.a[0]) != g.pid || static_cast<int32_t>(a.a[1]) != g.pid) return -ESRCH;
  return queue_self(g, a.a[2]);
}

int64_t sys_tkill(Guest& g, const SyscallArgs& a) {
  if (static_cast<int32_t>(a.a[0]) != g.pid) return -ESRCH;
  return queue_self(g, a.a[1]);
}

int64_t sys_rt_sigpending(Guest& g, const SyscallArgs& a) {
  return g.mem.write(a.a[0], g.sig.pending & g.sig.blocked) ? 0 : -EFAULT;
}

}  // namespace

void register_signal_syscalls(SyscallTable& t) {
  t.add(13, "rt_sigaction", sys_rt_sigaction);
  t.add(14, "rt_sigprocmask", sys_rt_sigprocmask);
  t.add(15, "rt_sigreturn", sys_rt_sigreturn);
  t.add(62, "kill", sys_kill);
  t.add(127, "rt_sigpending", sys_rt_sigpending);
  t.add(131, "sigaltstack", sys_sigaltstack);
  t.add(200, "tkill", sys_tkill);
  t.add(234, "tgkill", sys_tgkill);
}

}  // namespace sp::vmm
