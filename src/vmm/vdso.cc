// The guest vDSO: loading the embedded image and refreshing its clock data.
#include "vmm/vdso.h"

#include <elf.h>
#include <x86intrin.h>

#include <cstring>
#include <ctime>

#include "vmm/vdso_blob.h"

namespace sp::vmm {
namespace {

int64_t clock_ns(clockid_t c) {
  timespec ts;
  clock_gettime(c, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

Result<uint64_t> install_vdso(GuestMemory& mem, AddressSpace& as) {
  // SAFETY: the image is our own build output; still, every header field is bounds-checked
  // against the image and every destination against guest memory before copying.
  const size_t size = sizeof kVdsoImage;
  Elf64_Ehdr eh;
  if (size < sizeof eh) return Error{ENOEXEC, "vDSO image"};
  std::memcpy(&eh, kVdsoImage, sizeof eh);
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff + eh.e_phnum * sizeof(Elf64_Phdr) > size)
    return Error{ENOEXEC, "vDSO phdrs"};
  uint64_t end = kVdsoBase;
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, kVdsoImage + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_offset + ph.p_filesz > size || ph.p_filesz > ph.p_memsz || ph.p_vaddr + ph.p_memsz > kHugePage / 2)
      return Error{ENOEXEC, "vDSO segment"};
    if (!mem.copy_out(kVdsoBase + ph.p_vaddr, kVdsoImage + ph.p_offset, ph.p_filesz))
      return Error{EFAULT, "vDSO copy"};
    uint64_t seg_end = (kVdsoBase + ph.p_vaddr + ph.p_memsz + kPageSize - 1) & ~(kPageSize - 1);
    if (seg_end > end) end = seg_end;
  }
  as.add(kVdsoData, end - kVdsoData);
  return kVdsoBase;
}

VdsoClock calibrate_vdso_clock(KvmVcpu& vcpu) {
  VdsoClock c;
  auto khz = vcpu.tsc_khz();
  if (!khz.ok() || khz.value() == 0) return c;
  MsrValue tsc{0x10, 0};
  uint64_t before = __rdtsc();
  if (!vcpu.get_msrs(&tsc, 1).ok()) return c;
  uint64_t after = __rdtsc();
  int64_t offset = static_cast<int64_t>(tsc.value - (before / 2 + after / 2));
  // Within the ioctl's own duration the two readings are the same clock (kvm-pvm): no offset.
  if (offset > -static_cast<int64_t>(after - before) * 4 && offset < static_cast<int64_t>(after - before) * 4) offset = 0;
  c.tsc_offset = offset;
  c.mult = (uint64_t{1000000} << 32) / khz.value();
  c.usable = true;
  return c;
}

void refresh_vdso(GuestMemory& mem, const VdsoClock& clock) {
  VdsoData d{};
  d.enabled = clock.usable ? 1 : 0;
  d.mult = clock.mult;
  d.tsc_base = __rdtsc() + static_cast<uint64_t>(clock.tsc_offset);
  d.real_ns = clock_ns(CLOCK_REALTIME);
  d.mono_ns = clock_ns(CLOCK_MONOTONIC);
  d.boot_ns = clock_ns(CLOCK_BOOTTIME);
  // SAFETY: kVdsoData is a user page inside guest memory (checked by write()).
  mem.write(kVdsoData, d);
}

}  // namespace sp::vmm
