// The two trap backends' exit decoding and resume; see trap.h for the mechanisms.
#include "vmm/trap.h"

#include <cstring>

#include "vmm/layout.h"

namespace sp::vmm {
namespace {

constexpr uint16_t kPortSyscall = 0x10;    // emulated (real CPL0) syscall reached the LSTAR stub
constexpr uint16_t kPortException = 0x11;  // an IDT stub: [rsp] = vector, [rsp+8] = error code
constexpr uint64_t kStubLstar = kStubCode + 32 * 16;

// The iret frame the stubs leave on the kernel stack, below which they pushed vector and error.
struct StubFrame {
  uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

// Flags a user program may set (CF PF AF ZF SF TF DF OF RF AC ID); IF and bit 1 always on, IOPL 0.
uint64_t user_flags(uint64_t f) { return (f & 0x250dd5) | 0x202; }

StubFrame* stub_frame(const GuestMemory& mem, uint64_t rsp) {
  // The kernel stack lives in the supervisor area the guest cannot touch; still refuse anything
  // outside it so a confused vCPU state cannot steer the VMM's pointer.
  if (rsp < kKernelStackTop - 0x8000 || rsp > kKernelStackTop - sizeof(StubFrame)) return nullptr;
  // SAFETY: rsp..rsp+sizeof(StubFrame) lies inside the kernel stack in guest memory (checked above).
  return reinterpret_cast<StubFrame*>(mem.system_ptr(rsp));
}

Trap fatal(const char* what) {
  Trap t;
  t.what = what;
  return t;
}

}  // namespace

const char* backend_name(TrapBackend b) { return b == TrapBackend::kTripleFault ? "triple-fault" : "cpl0-stub"; }

bool parse_backend(const char* text, TrapBackend* out) {
  if (std::strcmp(text, "triple-fault") == 0) *out = TrapBackend::kTripleFault;
  else if (std::strcmp(text, "cpl0-stub") == 0) *out = TrapBackend::kCpl0Stub;
  else return false;
  return true;
}

uint64_t syscall_entry(TrapBackend b) { return b == TrapBackend::kTripleFault ? kSyscallTrapRip : kStubLstar; }

Trap decode_trap(TrapBackend b, kvm_run* run, const GuestMemory& mem, bool interrupted, kvm_regs* user) {
  const kvm_regs& r = run->s.regs.regs;
  const kvm_sregs& s = run->s.regs.sregs;
  const kvm_vcpu_events& ev = run->s.regs.events;
  *user = r;
  Trap t;
  if (interrupted) {
    t.kind = Trap::Kind::kInterrupted;
    // A signal may only be delivered between two user instructions. A `syscall` that has jumped
    // to LSTAR (rip there, still CPL3 on kvm-pvm) has its trap under way: the vCPU holds the
    // instruction-fetch #PF, even where the synced events do not show it, and raises it again
    // at whatever rip the VMM writes: a handler's first instruction then "faults" at LSTAR
    // (SIGSEGV, cr2 = LSTAR). Likewise an exception KVM has injected or queued belongs to the
    // current rip. In these states the guest resumes untouched and the signal waits for the
    // trap that follows at once.
    t.at_user = (s.cs.selector & 3) == 3 && r.rip != syscall_entry(b) && !ev.exception.injected &&
                !ev.exception.pending;
    return t;
  }
  if (b == TrapBackend::kTripleFault) {
    if (run->exit_reason != KVM_EXIT_SHUTDOWN) return fatal("unexpected KVM exit");
    if (r.rip == kSyscallTrapRip) {
      t.kind = Trap::Kind::kSyscall;
      user->rip = r.rcx;
      user->rflags = r.r11;
      return t;
    }
    // The exception that could not be delivered stays in the synced events (nr, error code);
    // kvm-pvm reports it with injected = pending = 0.
    t.kind = Trap::Kind::kException;
    t.vector = ev.exception.nr;
    t.error_code = ev.exception.has_error_code ? ev.exception.error_code : 0;
    t.cr2 = s.cr2;
    return t;
  }
  // kCpl0Stub
  if (run->exit_reason == KVM_EXIT_SHUTDOWN) return fatal("double fault in the CPL0 stub path");
  if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT) return fatal("unexpected KVM exit");
  if (run->io.port == kPortSyscall) {  // really at CPL0 on the LSTAR stub; sysretq returns via rcx/r11
    t.kind = Trap::Kind::kSyscall;
    user->rip = r.rcx;
    user->rflags = r.r11;
    return t;
  }
  if (run->io.port != kPortException) return fatal("unexpected port I/O");
  StubFrame* f = stub_frame(mem, r.rsp);
  if (!f) return fatal("kernel stack pointer outside the stub stack");
  user->rsp = f->rsp;
  user->rip = f->rip;
  user->rflags = f->rflags;
  if (f->vector == 14 && f->rip == kStubLstar) {  // native CPL3 syscall faulted at LSTAR
    t.kind = Trap::Kind::kSyscall;
    user->rip = r.rcx;
    user->rflags = r.r11;
    return t;
  }
  t.kind = Trap::Kind::kException;
  t.vector = static_cast<uint32_t>(f->vector & 31);
  t.error_code = static_cast<uint32_t>(f->error);
  t.cr2 = s.cr2;
  return t;
}

void resume_user(TrapBackend b, kvm_run* run, GuestMemory& mem, const Trap& trap, const kvm_regs& user) {
  // Stopped inside a stub or in the middle of a trap (decode_trap): leave every register to KVM
  // (writing them would also drop the exception KVM has queued), so the stub or trap finishes.
  if (trap.kind == Trap::Kind::kInterrupted && !trap.at_user) return;
  kvm_regs& r = run->s.regs.regs;
  run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
  if (b == TrapBackend::kTripleFault || trap.kind == Trap::Kind::kInterrupted) {
    r = user;
    r.rflags = user_flags(user.rflags);
    return;
  }
  if (run->exit_reason == KVM_EXIT_IO && run->io.port == kPortSyscall) {
    uint64_t kernel_rip = r.rip;
    r = user;
    r.rip = kernel_rip;  // continue at sysretq, which loads rip from rcx and rflags from r11
    r.rcx = user.rip;
    r.r11 = user_flags(user.rflags);
    return;
  }
  StubFrame* f = stub_frame(mem, r.rsp);
  uint64_t kernel_rsp = r.rsp, kernel_rip = r.rip;
  r = user;
  r.rsp = kernel_rsp;
  r.rip = kernel_rip;  // after the `out`: add $16,%rsp; iretq
  if (f) {
    f->rip = user.rip;
    f->rsp = user.rsp;
    f->rflags = user_flags(user.rflags);
  }
}

}  // namespace sp::vmm
