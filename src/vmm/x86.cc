// Long-mode system structures and vCPU state for the kernel-less guest.
#include "vmm/x86.h"

#include <cpuid.h>

#include <cstring>

#include "util/log.h"
#include "vmm/layout.h"

namespace sp::vmm {
namespace {

constexpr uint64_t kPtePresent = 1, kPteWrite = 2, kPteUser = 4, kPteHuge = 0x80;
constexpr uint64_t kCr0 = 0x80050033;  // PG | AM | WP | NE | ET | MP | PE
constexpr uint64_t kCr4 = 0x50620;     // OSXSAVE | FSGSBASE | OSXMMEXCPT | OSFXSR | PAE
constexpr uint64_t kEfer = 0xd01;      // NXE | LMA | LME | SCE
constexpr uint32_t kMsrStar = 0xc0000081, kMsrLstar = 0xc0000082, kMsrCstar = 0xc0000083;
constexpr uint32_t kMsrSfmask = 0xc0000084, kMsrKernelGsBase = 0xc0000102;
constexpr uint64_t kTssLimit = 0x67;   // no I/O bitmap: every CPL3 in/out faults

void put64(GuestMemory& mem, uint64_t gpa, uint64_t v) {
  std::memcpy(mem.system_ptr(gpa), &v, 8);  // SAFETY: VMM-chosen address in the system area.
}

// PML4 -> PDPT -> one page directory per GiB. Only the system page (the first 2 MiB, supervisor)
// is present here: user pages become present when their memslot chunk is mapped (memslots.h).
void build_page_tables(GuestMemory& mem) {
  put64(mem, kPml4, kPdpt | kPtePresent | kPteWrite | kPteUser);
  uint64_t gib = (mem.size() + (1ull << 30) - 1) >> 30;
  for (uint64_t g = 0; g < gib; ++g)
    put64(mem, kPdpt + g * 8, (kPdBase + g * kPageSize) | kPtePresent | kPteWrite | kPteUser);
  put64(mem, kPdBase, kPtePresent | kPteWrite | kPteHuge);
}

uint64_t pde_of(uint64_t gpa) { return kPdBase + (gpa >> 30) * kPageSize + ((gpa >> 21) & 511) * 8; }

void build_gdt(GuestMemory& mem) {
  put64(mem, kGdt + 0x00, 0);
  put64(mem, kGdt + 0x08, 0x00af9b000000ffffull);  // kernel code, 64-bit
  put64(mem, kGdt + 0x10, 0x00cf93000000ffffull);  // kernel data
  // 0x18 is the STAR base slot (32-bit user code for sysret to compat mode). Left null: the guest
  // cannot far-jump into 32-bit mode and make compat-mode syscalls.
  put64(mem, kGdt + 0x18, 0);
  put64(mem, kGdt + 0x20, 0x00cff3000000ffffull);  // user data
  put64(mem, kGdt + 0x28, 0x00affb000000ffffull);  // user code, 64-bit
  uint64_t lo = (kTssLimit & 0xffff) | ((kTss & 0xffffff) << 16) | (0x89ull << 40) |
                (((kTssLimit >> 16) & 0xf) << 48) | (((kTss >> 24) & 0xff) << 56);
  put64(mem, kGdt + 0x30, lo);
  put64(mem, kGdt + 0x38, kTss >> 32);
  // TSS: RSP0 and IST1 on the stub stack; I/O map base past the limit.
  uint8_t* tss = mem.system_ptr(kTss);
  std::memset(tss, 0, kTssLimit + 1);  // SAFETY: system area, VMM-owned.
  put64(mem, kTss + 4, kKernelStackTop);
  put64(mem, kTss + 36, kKernelStackTop - 0x4000);
  uint16_t iomap = kTssLimit + 1;
  std::memcpy(tss + 102, &iomap, 2);  // SAFETY: inside the 104-byte TSS.
}

void build_idt_and_stubs(GuestMemory& mem) {
  constexpr uint32_t kHasError = (1u << 8) | (1u << 10) | (1u << 11) | (1u << 12) | (1u << 13) | (1u << 14) |
                                 (1u << 17) | (1u << 21) | (1u << 29) | (1u << 30);
  for (uint32_t v = 0; v < 32; ++v) {
    uint64_t stub = kStubCode + v * 16;
    uint8_t code[16] = {0x90, 0x90, 0x6a, static_cast<uint8_t>(v), 0xe6, 0x11, 0x48, 0x83, 0xc4, 0x10, 0x48, 0xcf};
    if (!(kHasError & (1u << v))) code[0] = 0x6a, code[1] = 0x00;  // push $0 as the error code
    std::memcpy(mem.system_ptr(stub), code, sizeof code);  // SAFETY: system area, VMM-owned.
    uint64_t lo = (stub & 0xffff) | (uint64_t{kKernelCs} << 16) | (uint64_t{v == 8 ? 1u : 0u} << 32) |
                  (0x8eull << 40) | (((stub >> 16) & 0xffff) << 48);
    put64(mem, kIdt + v * 16, lo);
    put64(mem, kIdt + v * 16 + 8, stub >> 32);
  }
  const uint8_t lstar[] = {0xe6, 0x10, 0x48, 0x0f, 0x07};  // out %al,$0x10; sysretq
  std::memcpy(mem.system_ptr(syscall_entry(TrapBackend::kCpl0Stub)), lstar, sizeof lstar);  // SAFETY: as above.
}

kvm_segment segment(uint16_t sel, uint8_t type, bool code) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = sel;
  s.type = type;
  s.present = 1;
  s.dpl = sel & 3;
  s.db = code ? 0 : 1;
  s.s = 1;
  s.l = code ? 1 : 0;
  s.g = 1;
  return s;
}

}  // namespace

Status build_system_area(GuestMemory& mem, TrapBackend backend) {
  build_page_tables(mem);
  build_gdt(mem);
  if (backend == TrapBackend::kCpl0Stub) build_idt_and_stubs(mem);
  return {};
}

void unmap_huge_page(GuestMemory& mem, uint64_t gpa) {
  if (gpa < kUserBase || gpa % kHugePage != 0 || gpa >= mem.size()) return;
  put64(mem, pde_of(gpa), 0);
}

void map_huge_page(GuestMemory& mem, uint64_t gpa) {
  if (gpa < kUserBase || gpa % kHugePage != 0 || gpa >= mem.size()) return;
  put64(mem, pde_of(gpa), gpa | kPtePresent | kPteWrite | kPteHuge | kPteUser);
}

uint32_t host_hwcap() {
  unsigned a, b, c, d;
  __cpuid(1, a, b, c, d);
  return d;
}

namespace {

// MSRs, CPUID and XCR0: the same for a fresh vCPU and a restored clone.
Status init_vcpu_common(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& cpuid, TrapBackend backend) {
  const MsrValue msrs[] = {
      {kMsrStar, (uint64_t{kUserStarBase} << 48) | (uint64_t{kKernelCs} << 32)},
      {kMsrLstar, syscall_entry(backend)},
      {kMsrCstar, syscall_entry(backend)},
      {kMsrSfmask, 0x47700},  // TF | DF | IF | IOPL | NT | AC cleared on syscall entry
      {kMsrKernelGsBase, 0},
  };
  SP_TRY(vcpu.set_msrs(msrs, 5));
  SP_TRY(vcpu.set_cpuid(cpuid));
  // XCR0: what CPUID.0xD:0 says KVM supports, limited to x87|SSE|AVX|opmask|ZMM (0xe7).
  uint64_t xcr0 = 0x3;
  for (const kvm_cpuid_entry2& e : cpuid) {
    if (e.function == 0xd && e.index == 0) xcr0 = ((uint64_t{e.edx} << 32) | e.eax) & 0xe7;
  }
  if (Status st = vcpu.set_xcr0(xcr0 | 0x3); !st.ok())
    LOG_DEBUG("vmm: KVM_SET_XCRS(0x%llx) refused: %s", static_cast<unsigned long long>(xcr0), st.error().message().c_str());
  return {};
}

}  // namespace

Status init_vcpu(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& cpuid, TrapBackend backend,
                 uint64_t memory_bytes, uint64_t entry, uint64_t rsp) {
  (void)memory_bytes;
  SP_TRY(init_vcpu_common(vcpu, cpuid, backend));
  kvm_sregs s{};
  s.cs = segment(kUserCs, 0xb, true);
  s.ds = s.es = s.fs = s.gs = s.ss = segment(kUserDs, 0x3, false);
  s.tr = kvm_segment{kTss, kTssLimit, kTssSel, 0xb, 1, 0, 0, 0, 0, 0, 0, 0, 0};
  s.ldt.unusable = 1;
  s.gdt = kvm_dtable{kGdt, 0x3f, {}};
  s.idt = kvm_dtable{kIdt, static_cast<uint16_t>(backend == TrapBackend::kCpl0Stub ? 32 * 16 - 1 : 0), {}};
  s.cr0 = kCr0;
  s.cr3 = kPml4;
  s.cr4 = kCr4;
  s.efer = kEfer;
  SP_TRY(vcpu.set_sregs(s));
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  SP_TRY(vcpu.set_fpu(fpu));
  kvm_regs r{};
  r.rip = entry;
  r.rsp = rsp;
  r.rflags = 0x202;
  return vcpu.set_regs(r);
}

Status restore_vcpu(KvmVcpu& vcpu, const std::vector<kvm_cpuid_entry2>& cpuid, TrapBackend backend,
                    const kvm_sregs& sregs, const kvm_xsave* xsave) {
  SP_TRY(init_vcpu_common(vcpu, cpuid, backend));
  SP_TRY(vcpu.set_sregs(sregs));
  if (xsave) SP_TRY(vcpu.set_xsave(*xsave));
  return {};
}

}  // namespace sp::vmm
