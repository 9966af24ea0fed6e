// Owners of the KVM system, VM and vCPU descriptors: the only file in sandpool that issues KVM ioctls.
// Not a VMM: no policy lives here, only checked wrappers. All calls are made from the thread that
// runs the vCPU, except KvmVcpu::kick(), which any thread or signal handler may call.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::vmm {

struct MsrValue {
  uint32_t index;
  uint64_t value;
};

class KvmVcpu {
 public:
  KvmVcpu() = default;
  KvmVcpu(KvmVcpu&&) noexcept;
  KvmVcpu& operator=(KvmVcpu&&) noexcept;
  ~KvmVcpu();

  // The shared kvm_run page. Sync registers (REGS|SREGS|EVENTS) are enabled by KvmVm::create_vcpu,
  // so after run() the guest's registers are in run_area()->s.regs without further ioctls.
  kvm_run* run_area() const { return run_; }

  Status set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
  Status set_sregs(const kvm_sregs& sregs);
  Status set_regs(const kvm_regs& regs);
  Status set_fpu(const kvm_fpu& fpu);
  Status set_msrs(const MsrValue* msrs, int count);
  Status get_msrs(MsrValue* msrs, int count);
  Status set_xcr0(uint64_t xcr0);
  Status get_xsave(kvm_xsave* out);
  Status set_xsave(const kvm_xsave& in);
  Status get_events(kvm_vcpu_events* out);
  Result<uint32_t> tsc_khz();
  Status set_events(const kvm_vcpu_events& in);
  // The vCPU's KVM statistics (KVM_GET_STATS_FD) named in `names`, in that order; a name KVM does
  // not report reads as 0. For `vm-run --stats` (e.g. pf_taken: shadow-paging faults).
  Result<std::vector<uint64_t>> stats(const std::vector<const char*>& names);

  // Enters the guest until the next exit. Returns EINTR (as an Error) when a host signal or kick()
  // interrupted it; kvm_run's sync registers are valid in both cases.
  Status run();

  // Makes the current or next run() return EINTR. Async-signal-safe.
  void kick() { if (run_) __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST); }

 private:
  friend class KvmVm;
  UniqueFd fd_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
};

class KvmVm {
 public:
  // Maps host memory [host, host+size) at guest-physical `gpa` as memslot `slot`.
  Status set_memory(uint32_t slot, uint64_t gpa, uint64_t size, void* host);
  Result<KvmVcpu> create_vcpu(int id);

 private:
  friend class Kvm;
  UniqueFd fd_;
  size_t run_size_ = 0;
};

class Kvm {
 public:
  static constexpr uint32_t kMaxMemslots = 1024;  // checked at open(); MemSlots stays below it
  // Opens /dev/kvm and checks the API version and the capabilities the VMM relies on.
  static Result<Kvm> open();
  Result<KvmVm> create_vm();
  // KVM_GET_SUPPORTED_CPUID, read once at open().
  const std::vector<kvm_cpuid_entry2>& supported_cpuid() const { return cpuid_; }

 private:
  UniqueFd fd_;
  size_t run_size_ = 0;
  std::vector<kvm_cpuid_entry2> cpuid_;
};

}  // namespace sp::vmm
