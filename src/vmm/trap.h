// How a guest `syscall` or CPU exception reaches the VMM and how the guest is resumed: the one
// backend switch. Not the syscall implementations (syscalls/) nor signal delivery (syscalls/signal.cc).
//
// kTripleFault (default on kvm-pvm): no IDT and no CPL0 code. LSTAR names an unmapped address, so
//   a native CPL3 `syscall` faults there; the fault cannot be delivered, the vCPU shuts down with its
//   CPL3 registers intact and the original exception in the synced vCPU events. Measured here as the
//   fastest path (bench/vmm). Does not carry over to KVM on AMD SVM (VMCB undefined after shutdown).
// kCpl0Stub: the classic path for hardware virtualization: LSTAR and all 32 IDT vectors enter small
//   supervisor-only CPL0 stubs that `out` to the VMM with the vector on the kernel stack, then iretq
//   / sysretq. On kvm-pvm a native `syscall` arrives as a #PF at LSTAR and is handled the same way.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "vmm/memory.h"

namespace sp::vmm {

enum class TrapBackend { kTripleFault, kCpl0Stub };
const char* backend_name(TrapBackend b);
bool parse_backend(const char* text, TrapBackend* out);

inline constexpr uint32_t kPageFaultVector = 14;

struct Trap {
  enum class Kind { kSyscall, kException, kInterrupted, kFatal };
  Kind kind = Kind::kFatal;
  uint32_t vector = 0;      // kException: CPU vector 0..31
  uint32_t error_code = 0;  // kException: the error code, 0 when the vector has none
  uint64_t cr2 = 0;         // kException: faulting address for #PF
  bool at_user = true;      // kInterrupted: false when stopped inside a CPL0 stub or a trap (deliver later)
  const char* what = "";    // kFatal: why
};

// Where LSTAR points for this backend.
uint64_t syscall_entry(TrapBackend b);

// Decodes the exit that KVM_RUN just reported (interrupted: whether KVM_RUN failed with EINTR).
// Fills *user with the guest's user-mode registers (rip/rsp/rflags as the program sees them:
// for a syscall, rip is the return address). Reads the kernel stack for kCpl0Stub.
Trap decode_trap(TrapBackend b, kvm_run* run, const GuestMemory& mem, bool interrupted, kvm_regs* user);

// Writes *user back so the next KVM_RUN continues the program there (with rax as set by the caller).
void resume_user(TrapBackend b, kvm_run* run, GuestMemory& mem, const Trap& trap, const kvm_regs& user);

}  // namespace sp::vmm
