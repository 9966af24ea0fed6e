// The guest's fixed address layout (guest-virtual == guest-physical); constants only, no code.
#pragma once

#include <cstdint>

namespace sp::vmm {

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kHugePage = 2ull << 20;

// The first 2 MiB hold the system structures and are mapped supervisor-only: a user access there
// faults, so the guest can neither read nor write its page tables, GDT, IDT, TSS or stubs.
inline constexpr uint64_t kPml4 = 0x1000;
inline constexpr uint64_t kPdpt = 0x2000;
inline constexpr uint64_t kPdBase = 0x3000;    // one page directory per GiB, up to kMaxMemoryBytes
inline constexpr uint64_t kGdt = 0x13000;
inline constexpr uint64_t kIdt = 0x14000;
inline constexpr uint64_t kTss = 0x15000;      // TSS, then its I/O bitmap
inline constexpr uint64_t kStubCode = 0x18000; // CPL0 stubs (kCpl0Stub backend)
inline constexpr uint64_t kKernelStackTop = 0x30000;
inline constexpr uint64_t kUserBase = kHugePage;  // lowest address a guest pointer may name

inline constexpr uint64_t kMinMemoryBytes = 64ull << 20;
inline constexpr uint64_t kMaxMemoryBytes = 16ull << 30;

// Segment selectors. STAR[47:32] = kernel CS; STAR[63:48] = kUserStarBase so that sysret loads
// CS = base+16 (|3) = 0x2b and SS = base+8 (|3) = 0x23.
inline constexpr uint16_t kKernelCs = 0x08;
inline constexpr uint16_t kKernelDs = 0x10;
inline constexpr uint16_t kUserStarBase = 0x18;
inline constexpr uint16_t kUserDs = 0x20 | 3;
inline constexpr uint16_t kUserCs = 0x28 | 3;
inline constexpr uint16_t kTssSel = 0x30;

// Triple-fault backend: LSTAR points at this canonical address, which no page table maps, so a
// native CPL3 `syscall` faults there; with an empty IDT the fault becomes a shutdown exit.
inline constexpr uint64_t kSyscallTrapRip = 0x7fff00000000ull;

// User address space: the program image sits low (ET_EXEC at its own address, PIE at kPieBase),
// brk grows up after it, mmap allocates top-down below the stack guard (2 MiB, not present in the
// page tables), the stack (kStackBytes) ends at memory top. The vDSO sits at 2 MiB (vdso.h).
inline constexpr uint64_t kPieBase = 0x1000000;
inline constexpr uint64_t kStackBytes = 8ull << 20;

}  // namespace sp::vmm
