// Installs the guest vDSO (src/vmm/vdso/vdso.c, embedded at build time) and keeps its data page
// current, so guest clock reads need no VM exit. Valid where guest CPL3 `rdtsc` reads the host TSC
// plus a fixed offset that KVM reports (kvm-pvm: offset 0, checked at calibration).
#pragma once

#include <cstdint>

#include "util/result.h"
#include "vmm/address_space.h"
#include "vmm/kvm.h"
#include "vmm/memory.h"

namespace sp::vmm {

// The data page the vDSO reads; layout shared with vdso/vdso.c (which keeps its own state at
// offset 2048 of the same page; refresh_vdso writes only this struct).
struct VdsoData {
  uint64_t tsc_base;
  int64_t real_ns, mono_ns, boot_ns;
  uint64_t mult;
  uint32_t enabled, pad;
};

inline constexpr uint64_t kVdsoData = 0x200000;            // one user page
inline constexpr uint64_t kVdsoBase = kVdsoData + 0x1000;  // the vDSO's ELF header (AT_SYSINFO_EHDR)

struct VdsoClock {
  uint64_t mult = 0;       // ns per TSC tick << 32
  int64_t tsc_offset = 0;  // guest TSC - host TSC
  bool usable = false;
};

// Copies the vDSO's segments to kVdsoBase and records [kVdsoData, end) in `as`. Returns the
// address for AT_SYSINFO_EHDR.
Result<uint64_t> install_vdso(GuestMemory& mem, AddressSpace& as);

// Reads the vCPU's TSC rate and offset (KVM_GET_TSC_KHZ, MSR IA32_TSC).
VdsoClock calibrate_vdso_clock(KvmVcpu& vcpu);

// Rewrites the data page with fresh bases; called while the guest is stopped.
void refresh_vdso(GuestMemory& mem, const VdsoClock& clock);

}  // namespace sp::vmm
