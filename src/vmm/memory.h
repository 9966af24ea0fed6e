// Guest memory: one memfd mapped shared into the VMM, or for a VM that is never snapshotted
// anonymous memory with transparent huge pages (given to KVM chunk by chunk, memslots.h);
// every access the VMM makes on the guest's behalf goes through the checked accessors here. Not an
// allocator (address-space bookkeeping is in address_space.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "util/result.h"
#include "util/unique_fd.h"
#include "vmm/layout.h"

namespace sp::vmm {

class GuestMemory {
 public:
  GuestMemory() = default;
  GuestMemory(GuestMemory&&) noexcept;
  GuestMemory& operator=(GuestMemory&&) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  ~GuestMemory();

  enum class Backing {
    kMemfd,          // shareable: what snapshot() hands to clones
    kAnonymousHuge,  // no memfd, 2 MiB-aligned, MADV_HUGEPAGE (see create)
  };
  // A fresh, zeroed guest of `bytes` (a multiple of 2 MiB within [kMinMemoryBytes, kMaxMemoryBytes]).
  // kAnonymousHuge is for a VM that will not be snapshotted: on kvm-pvm's shadow MMU a guest 2 MiB
  // page backed by a host huge page is mapped by one shadow fault instead of one per 4 KiB page
  // (3-9 us each); the host memory is then used in 2 MiB steps. Falls back to 4 KiB pages where THP is
  // off (the guest sees no difference). memfd() is -1.
  // kMemfd with `file_dir_fd` >= 0: the memory is an unnamed file made in that directory
  // (O_TMPFILE) instead of a memfd, e.g. on a tmpfs mounted with huge=always, where a read of a
  // guest 2 MiB page the template wrote is one shadow fault in a clone instead of one per 4 KiB.
  static Result<GuestMemory> create(uint64_t bytes, Backing backing = Backing::kMemfd, int file_dir_fd = -1);
  // A copy-on-write view of a frozen template's memfd (MAP_PRIVATE): reads share the template's
  // pages, writes stay private to this process. The memfd is borrowed, not owned.
  static Result<GuestMemory> map_private(int memfd, uint64_t bytes);
  bool is_private() const { return private_; }
  bool is_anonymous() const { return anonymous_; }

  uint64_t size() const { return size_; }
  uint8_t* host_base() const { return host_; }
  int memfd() const { return memfd_.get(); }

  // True when [gva, gva+len) lies inside user memory [kUserBase, size). Overflow-safe; the one
  // check behind every guest pointer the VMM dereferences.
  bool user_range_ok(uint64_t gva, uint64_t len) const {
    return gva >= kUserBase && gva <= size_ && len <= size_ - gva;
  }
  // Host pointer for a checked user range, or nullptr when the range is not all guest memory.
  uint8_t* user_ptr(uint64_t gva, uint64_t len) const {
    return user_range_ok(gva, len) ? host_ + gva : nullptr;
  }
  // Host pointer into the supervisor area, for the VMM's own setup only (never for guest input).
  uint8_t* system_ptr(uint64_t gpa) const { return host_ + gpa; }

  // Checked copies between guest and VMM; return false (nothing copied) on a bad range.
  bool copy_in(void* dst, uint64_t gva, uint64_t len) const {
    const uint8_t* p = user_ptr(gva, len);
    if (!p) return false;
    std::memcpy(dst, p, len);  // SAFETY: p..p+len checked to lie inside the guest mapping.
    return true;
  }
  bool copy_out(uint64_t gva, const void* src, uint64_t len) const {
    uint8_t* p = user_ptr(gva, len);
    if (!p) return false;
    std::memcpy(p, src, len);  // SAFETY: as copy_in.
    return true;
  }
  template <class T>
  bool read(uint64_t gva, T* out) const { return copy_in(out, gva, sizeof(T)); }
  template <class T>
  bool write(uint64_t gva, const T& v) const { return copy_out(gva, &v, sizeof(T)); }

  // Reads a NUL-terminated string of at most max_len bytes (NUL excluded). Errors: EFAULT for a
  // bad pointer, ENAMETOOLONG when no NUL appears within max_len bytes.
  Status read_cstring(uint64_t gva, size_t max_len, std::string* out) const;

  // Zeroes [gva, gva+len) of user memory: whole pages are released to the host (hole punch, or for
  // a private view fresh anonymous pages mapped over them), edges are cleared with memset.
  // Unmapped guest memory is kept zero by this invariant.
  Status zero(uint64_t gva, uint64_t len);

 private:
  UniqueFd memfd_;
  uint8_t* host_ = nullptr;
  uint64_t size_ = 0;
  bool private_ = false;
  bool anonymous_ = false;
};

}  // namespace sp::vmm
