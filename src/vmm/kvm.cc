// KVM ioctl wrappers; each returns the failing ioctl's errno with its name.
#include "vmm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <utility>

namespace sp::vmm {
namespace {

// The uapi structs ending in a flexible array (kvm_cpuid2, kvm_msrs, kvm_xsave) have a different
// sizeof in C++ than in C, which changes the size field of their ioctl numbers; these are the
// kernel's (C) numbers.
constexpr unsigned long kGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
constexpr unsigned long kSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
constexpr unsigned long kGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
constexpr unsigned long kSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
constexpr unsigned long kGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, 4096);
constexpr unsigned long kSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, 4096);

// SAFETY: every ioctl below passes a pointer to a correctly sized, live struct of the type the
// request number encodes; the kernel copies in or out of it before returning.
Status check(int rc, const char* where) {
  if (rc < 0) return errno_error(where);
  return {};
}

}  // namespace

KvmVcpu::KvmVcpu(KvmVcpu&& o) noexcept
    : fd_(std::move(o.fd_)), run_(std::exchange(o.run_, nullptr)), run_size_(o.run_size_) {}

KvmVcpu& KvmVcpu::operator=(KvmVcpu&& o) noexcept {
  if (this != &o) {
    if (run_) munmap(run_, run_size_);
    fd_ = std::move(o.fd_);
    run_ = std::exchange(o.run_, nullptr);
    run_size_ = o.run_size_;
  }
  return *this;
}

KvmVcpu::~KvmVcpu() {
  if (run_) munmap(run_, run_size_);
}

Status KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  // kvm_cpuid2 as the kernel lays it out: u32 nent, u32 pad, entries at offset 8.
  std::vector<uint64_t> buf(1 + entries.size() * sizeof(kvm_cpuid_entry2) / 8);
  auto nent = static_cast<uint32_t>(entries.size());
  std::memcpy(buf.data(), &nent, 4);  // SAFETY: buf holds the 8-byte header plus the entries.
  std::memcpy(buf.data() + 1, entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  return check(ioctl(fd_.get(), kSetCpuid2, buf.data()), "KVM_SET_CPUID2");
}

Status KvmVcpu::set_sregs(const kvm_sregs& s) { return check(ioctl(fd_.get(), KVM_SET_SREGS, &s), "KVM_SET_SREGS"); }
Status KvmVcpu::set_regs(const kvm_regs& r) { return check(ioctl(fd_.get(), KVM_SET_REGS, &r), "KVM_SET_REGS"); }
Status KvmVcpu::set_fpu(const kvm_fpu& f) { return check(ioctl(fd_.get(), KVM_SET_FPU, &f), "KVM_SET_FPU"); }
Status KvmVcpu::get_xsave(kvm_xsave* x) { return check(ioctl(fd_.get(), kGetXsave, x), "KVM_GET_XSAVE"); }
Status KvmVcpu::set_xsave(const kvm_xsave& x) { return check(ioctl(fd_.get(), kSetXsave, &x), "KVM_SET_XSAVE"); }
Status KvmVcpu::get_events(kvm_vcpu_events* e) {
  return check(ioctl(fd_.get(), KVM_GET_VCPU_EVENTS, e), "KVM_GET_VCPU_EVENTS");
}
Result<uint32_t> KvmVcpu::tsc_khz() {
  int rc = ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  if (rc < 0) return errno_error("KVM_GET_TSC_KHZ");
  return static_cast<uint32_t>(rc);
}

Result<std::vector<uint64_t>> KvmVcpu::stats(const std::vector<const char*>& names) {
  UniqueFd sfd(ioctl(fd_.get(), KVM_GET_STATS_FD, 0));
  if (!sfd) return errno_error("KVM_GET_STATS_FD");
  kvm_stats_header h;
  if (pread(sfd.get(), &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return Error{EIO, "KVM stats header"};
  if (h.num_desc > 4096 || h.name_size > 4096) return Error{EIO, "KVM stats header"};
  // Each descriptor is followed by its name (name_size bytes). The fixed part is spelled out here:
  // in C++ the header's flexible-array member makes sizeof(kvm_stats_desc) larger than the ABI's 16.
  struct StatsDesc {
    uint32_t flags;
    int16_t exponent;
    uint16_t size;
    uint32_t offset;
    uint32_t bucket_size;
  };
  static_assert(sizeof(StatsDesc) == 16);
  size_t desc_size = sizeof(StatsDesc) + h.name_size;
  std::vector<uint8_t> descs(desc_size * h.num_desc);
  if (pread(sfd.get(), descs.data(), descs.size(), h.desc_offset) != static_cast<ssize_t>(descs.size()))
    return Error{EIO, "KVM stats descriptors"};
  std::vector<uint64_t> out(names.size(), 0);
  for (uint32_t i = 0; i < h.num_desc; ++i) {
    // SAFETY: descriptor i lies inside `descs` (desc_size * num_desc bytes); memcpy avoids aliasing.
    StatsDesc d;
    std::memcpy(&d, descs.data() + i * desc_size, sizeof d);
    std::string name(reinterpret_cast<const char*>(descs.data() + i * desc_size + sizeof d),
                     strnlen(reinterpret_cast<const char*>(descs.data() + i * desc_size + sizeof d), h.name_size));
    for (size_t k = 0; k < names.size(); ++k) {
      if (name != names[k]) continue;
      uint64_t v = 0;
      if (pread(sfd.get(), &v, sizeof v, h.data_offset + d.offset) != static_cast<ssize_t>(sizeof v))
        return Error{EIO, "KVM stats data"};
      out[k] = v;
    }
  }
  return out;
}

Status KvmVcpu::set_events(const kvm_vcpu_events& e) {
  return check(ioctl(fd_.get(), KVM_SET_VCPU_EVENTS, &e), "KVM_SET_VCPU_EVENTS");
}

namespace {
// kvm_msrs as the kernel lays it out: u32 nmsrs, u32 pad, then the entries at offset 8.
struct MsrBuf {
  uint32_t nmsrs = 0, pad = 0;
  kvm_msr_entry entries[16] = {};
};
}  // namespace

Status KvmVcpu::set_msrs(const MsrValue* msrs, int count) {
  if (count > 16) return Error{kETooLarge, "KVM_SET_MSRS count"};
  MsrBuf b{};
  b.nmsrs = count;
  for (int i = 0; i < count; ++i) b.entries[i] = kvm_msr_entry{msrs[i].index, 0, msrs[i].value};
  int rc = ioctl(fd_.get(), kSetMsrs, &b);
  if (rc < 0) return errno_error("KVM_SET_MSRS");
  if (rc != count) return Error{EINVAL, "KVM_SET_MSRS (an MSR was refused)"};
  return {};
}

Status KvmVcpu::get_msrs(MsrValue* msrs, int count) {
  if (count > 16) return Error{kETooLarge, "KVM_GET_MSRS count"};
  MsrBuf b{};
  b.nmsrs = count;
  for (int i = 0; i < count; ++i) b.entries[i].index = msrs[i].index;
  int rc = ioctl(fd_.get(), kGetMsrs, &b);
  if (rc < 0) return errno_error("KVM_GET_MSRS");
  if (rc != count) return Error{EINVAL, "KVM_GET_MSRS (an MSR was refused)"};
  for (int i = 0; i < count; ++i) msrs[i].value = b.entries[i].data;
  return {};
}

Status KvmVcpu::set_xcr0(uint64_t xcr0) {
  kvm_xcrs x{};
  x.nr_xcrs = 1;
  x.xcrs[0].xcr = 0;
  x.xcrs[0].value = xcr0;
  return check(ioctl(fd_.get(), KVM_SET_XCRS, &x), "KVM_SET_XCRS");
}

Status KvmVcpu::run() {
  int rc = ioctl(fd_.get(), KVM_RUN, 0);
  if (rc < 0) {
    int e = errno;
    // immediate_exit is one-shot: clear it so the next run() enters the guest.
    __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
    return Error{e, "KVM_RUN"};
  }
  return {};
}

Status KvmVm::set_memory(uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  return check(ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r), "KVM_SET_USER_MEMORY_REGION");
}

Result<KvmVcpu> KvmVm::create_vcpu(int id) {
  KvmVcpu v;
  v.fd_ = UniqueFd(ioctl(fd_.get(), KVM_CREATE_VCPU, id));
  if (!v.fd_) return errno_error("KVM_CREATE_VCPU");
  // SAFETY: maps the vCPU's kvm_run page of the size KVM reported; unmapped by ~KvmVcpu.
  void* p = mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, v.fd_.get(), 0);
  if (p == MAP_FAILED) return errno_error("mmap kvm_run");
  v.run_ = static_cast<kvm_run*>(p);
  v.run_size_ = run_size_;
  v.run_->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;
  return v;
}

Result<Kvm> Kvm::open() {
  Kvm k;
  k.fd_ = UniqueFd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!k.fd_) return errno_error("open /dev/kvm");
  if (ioctl(k.fd_.get(), KVM_GET_API_VERSION, 0) != KVM_API_VERSION) return Error{ENOTSUP, "KVM API version"};
  int sync = ioctl(k.fd_.get(), KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
  if (sync < 0 || (sync & KVM_SYNC_X86_VALID_FIELDS) != KVM_SYNC_X86_VALID_FIELDS)
    return Error{ENOTSUP, "KVM_CAP_SYNC_REGS"};
  if (ioctl(k.fd_.get(), KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT) <= 0)
    return Error{ENOTSUP, "KVM_CAP_IMMEDIATE_EXIT"};
  // Guest memory is given to KVM in chunks, one memslot each (memslots.h): the largest guest needs
  // kMaxMemslots of them.
  int slots = ioctl(k.fd_.get(), KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
  if (slots < static_cast<int>(kMaxMemslots)) return Error{ENOTSUP, "KVM_CAP_NR_MEMSLOTS (too few memslots)"};
  int sz = ioctl(k.fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (sz <= 0) return errno_error("KVM_GET_VCPU_MMAP_SIZE");
  k.run_size_ = static_cast<size_t>(sz);
  constexpr uint32_t kMaxEntries = 256;
  std::vector<uint64_t> buf(1 + kMaxEntries * sizeof(kvm_cpuid_entry2) / 8);
  uint32_t nent = kMaxEntries;
  std::memcpy(buf.data(), &nent, 4);  // SAFETY: header of the kernel's layout (entries at offset 8).
  SP_TRY(check(ioctl(k.fd_.get(), kGetSupportedCpuid, buf.data()), "KVM_GET_SUPPORTED_CPUID"));
  std::memcpy(&nent, buf.data(), 4);
  if (nent > kMaxEntries) return Error{E2BIG, "KVM_GET_SUPPORTED_CPUID"};
  k.cpuid_.resize(nent);
  std::memcpy(k.cpuid_.data(), buf.data() + 1, nent * sizeof(kvm_cpuid_entry2));
  return k;
}

Result<KvmVm> Kvm::create_vm() {
  KvmVm vm;
  vm.fd_ = UniqueFd(ioctl(fd_.get(), KVM_CREATE_VM, 0));
  if (!vm.fd_) return errno_error("KVM_CREATE_VM");
  vm.run_size_ = run_size_;
  return vm;
}

}  // namespace sp::vmm
