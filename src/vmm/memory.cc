// Guest memory backing: memfd creation, mapping and the checked string/zeroing helpers.
#include "vmm/memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <utility>

namespace sp::vmm {

GuestMemory::GuestMemory(GuestMemory&& o) noexcept
    : memfd_(std::move(o.memfd_)),
      host_(std::exchange(o.host_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      private_(o.private_),
      anonymous_(o.anonymous_) {}

GuestMemory& GuestMemory::operator=(GuestMemory&& o) noexcept {
  if (this != &o) {
    if (host_) munmap(host_, size_);
    memfd_ = std::move(o.memfd_);
    host_ = std::exchange(o.host_, nullptr);
    size_ = std::exchange(o.size_, 0);
    private_ = o.private_;
    anonymous_ = o.anonymous_;
  }
  return *this;
}

GuestMemory::~GuestMemory() {
  if (host_) munmap(host_, size_);
}

namespace {

// mmap of `bytes` at a 2 MiB-aligned address (KVM maps a host huge page only where guest-physical
// and host addresses agree modulo 2 MiB; guest-physical = file offset here).
void* map_aligned(uint64_t bytes, int flags, int fd) {
  // SAFETY: a fresh reservation 2 MiB larger than asked; the mapping replaces an aligned part of
  // it (MAP_FIXED) and the rest is unmapped.
  void* r = mmap(nullptr, bytes + kHugePage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return MAP_FAILED;
  auto raw = reinterpret_cast<uintptr_t>(r);
  uintptr_t base = (raw + kHugePage - 1) & ~uintptr_t{kHugePage - 1};
  void* p = mmap(reinterpret_cast<void*>(base), bytes, PROT_READ | PROT_WRITE, flags | MAP_FIXED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) {
    munmap(r, bytes + kHugePage);
    return MAP_FAILED;
  }
  if (base > raw) munmap(r, base - raw);
  munmap(reinterpret_cast<void*>(base + bytes), raw + kHugePage - base);
  return p;
}

}  // namespace

Result<GuestMemory> GuestMemory::create(uint64_t bytes, Backing backing, int file_dir_fd) {
  if (bytes < kMinMemoryBytes || bytes > kMaxMemoryBytes || bytes % kHugePage != 0)
    return Error{kEInvalid, "guest memory size"};
  GuestMemory m;
  if (backing == Backing::kAnonymousHuge) {
    void* p = map_aligned(bytes, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    if (p == MAP_FAILED) return errno_error("mmap guest memory");
    auto base = reinterpret_cast<uintptr_t>(p);
    // Advisory: without THP (or with it disabled) the memory simply stays in 4 KiB pages. Not for
    // the first 2 MiB (system area: KVM shadows page tables with 4 KiB pages anyway) nor the last
    // (the top of the stack, of which a program uses a few pages): zeroing a huge page there cost a
    // small program more than its faults (exit_now: load 1.05 -> 0.78 ms, create 1.18 -> 0.96 ms).
    (void)madvise(reinterpret_cast<void*>(base + kHugePage), bytes - 2 * kHugePage, MADV_HUGEPAGE);
    m.host_ = reinterpret_cast<uint8_t*>(base);
    m.size_ = bytes;
    m.anonymous_ = true;
    return m;
  }
  if (file_dir_fd >= 0) {
    m.memfd_ = UniqueFd(openat(file_dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!m.memfd_) return errno_error("guest memory file");
  } else {
    m.memfd_ = UniqueFd(memfd_create("sandpool-guest", MFD_CLOEXEC));
    if (!m.memfd_) return errno_error("memfd_create");
  }
  if (ftruncate(m.memfd_.get(), static_cast<off_t>(bytes)) < 0) return errno_error("ftruncate guest memfd");
  // A shared mapping of the whole memfd; the VMM and KVM see the same pages.
  void* p = map_aligned(bytes, MAP_SHARED, m.memfd_.get());
  if (p == MAP_FAILED) return errno_error("mmap guest memory");
  m.host_ = static_cast<uint8_t*>(p);
  m.size_ = bytes;
  return m;
}

Result<GuestMemory> GuestMemory::map_private(int memfd, uint64_t bytes) {
  GuestMemory m;
  // A private mapping of the template's whole memfd; the template never writes it again. Aligned:
  // where the memfd has huge pages, a clone's reads then map them whole.
  void* p = map_aligned(bytes, MAP_PRIVATE, memfd);
  if (p == MAP_FAILED) return errno_error("mmap template memory");
  m.host_ = static_cast<uint8_t*>(p);
  m.size_ = bytes;
  m.private_ = true;
  return m;
}

Status GuestMemory::read_cstring(uint64_t gva, size_t max_len, std::string* out) const {
  if (gva < kUserBase || gva >= size_) return Error{EFAULT, "guest string"};
  uint64_t avail = size_ - gva;
  uint64_t scan = avail < max_len + 1 ? avail : max_len + 1;
  // SAFETY: [gva, gva+scan) is inside guest memory (scan <= size_ - gva).
  const void* nul = std::memchr(host_ + gva, 0, scan);
  if (!nul) return Error{scan == avail ? EFAULT : ENAMETOOLONG, "guest string"};
  out->assign(reinterpret_cast<const char*>(host_ + gva), static_cast<const uint8_t*>(nul) - (host_ + gva));
  return {};
}

Status GuestMemory::zero(uint64_t gva, uint64_t len) {
  if (!user_range_ok(gva, len)) return Error{EFAULT, "zero guest range"};
  uint64_t first = (gva + kPageSize - 1) & ~(kPageSize - 1);
  uint64_t last = (gva + len) & ~(kPageSize - 1);
  if (first >= last) {
    std::memset(host_ + gva, 0, len);  // SAFETY: range checked above.
    return {};
  }
  std::memset(host_ + gva, 0, first - gva);        // SAFETY: head, inside the checked range.
  std::memset(host_ + last, 0, gva + len - last);  // SAFETY: tail, inside the checked range.
  // Releasing the pages both zeroes them and returns their memory; KVM's MMU notifier drops any
  // shadow mapping of them. A private view must not punch the template's memfd: it maps fresh
  // anonymous zero pages over the range instead.
  if (private_) {
    // SAFETY: [first, last) lies inside this VM's own mapping (checked above).
    void* p = mmap(host_ + first, last - first, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) std::memset(host_ + first, 0, last - first);
    return {};
  }
  if (anonymous_) {
    // Private anonymous pages read back as zero after MADV_DONTNEED (a huge page is split first).
    // SAFETY: [first, last) lies inside this VM's own mapping (checked above).
    if (madvise(host_ + first, last - first, MADV_DONTNEED) < 0) std::memset(host_ + first, 0, last - first);
    return {};
  }
  if (fallocate(memfd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(first),
                static_cast<off_t>(last - first)) < 0) {
    std::memset(host_ + first, 0, last - first);  // SAFETY: inside the checked range.
  }
  return {};
}

}  // namespace sp::vmm
