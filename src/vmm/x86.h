// x86-64 machine setup for a kernel-less guest: page tables, GDT, TSS, IDT and stubs in the
// supervisor-only first 2 MiB, and the vCPU's long-mode state. Not the run loop (vm.cc).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "util/result.h"
#include "vmm/kvm.h"
#include "vmm/memory.h"
#include "vmm/trap.h"

namespace sp::vmm {

// Steps, in order: 1. identity page tables with 2 MiB pages, of which only the first (supervisor-only)
// is present: user pages are made present chunk by chunk as KVM gets them (memslots.h); 2. GDT with kernel and user segments and a
// 64-bit TSS; 3. the IDT and CPL0 stubs (kCpl0Stub only; kTripleFault keeps an empty IDT).
Status build_system_area(GuestMemory& mem, TrapBackend backend);

// Makes the 2 MiB page at `gpa` (2 MiB aligned, user memory) not present, so any guest access
// faults: the guard below the stack. Call before the vCPU first runs.
void unmap_huge_page(GuestMemory& mem, uint64_t gpa);
// Makes the 2 MiB user page at `gpa` present (user read/write/execute, identity). Only for memory
// KVM has a memslot for (MemSlots::map_chunk); a not-present -> present change needs no flush.
void map_huge_page(GuestMemory& mem, uint64_t gpa);

// Puts the vCPU in 64-bit long mode at CPL3 at `entry` with stack `rsp`: SREGS (CR0/CR3/CR4/EFER,
// segments, GDT/IDT/TR), CPUID from KVM_GET_SUPPORTED_CPUID, XCR0 (x87/SSE/AVX/AVX-512 where
// supported), the syscall MSRs for the backend, FPU control words and the general registers.
Status init_vcpu(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& cpuid, TrapBackend backend,
                 uint64_t memory_bytes, uint64_t entry, uint64_t rsp);

// Restores a clone's vCPU: the common state of init_vcpu plus the template's SREGS and XSAVE
// (general registers go in through kvm_run's sync area at the first run).
Status restore_vcpu(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& cpuid, TrapBackend backend,
                    const kvm_sregs& sregs, const kvm_xsave* xsave);

// CPUID.1:EDX of the host, for AT_HWCAP.
uint32_t host_hwcap();

}  // namespace sp::vmm
