// Memory syscalls (mmap, munmap, mprotect, brk, mremap, madvise, ...) inside guest memory.
// Protections are recorded by nothing and not enforced: every user page is read/write/execute
// (2 MiB identity pages); mprotect only validates its range.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "vmm/syscalls/dispatch.h"

namespace sp::vmm {
namespace {

// Copies a regular file into guest memory at [addr, addr+len) from offset `off`; bytes past EOF
// stay zero.
int64_t fill_from_file(Guest& g, int host_fd, uint64_t addr, uint64_t len, uint64_t off) {
  uint64_t done = 0;
  while (done < len) {
    // SAFETY: [addr, addr+len) was checked against guest memory by the caller.
    ssize_t n = pread(host_fd, g.mem.user_ptr(addr + done, len - done), len - done, static_cast<off_t>(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

int64_t sys_mmap(Guest& g, const SyscallArgs& a) {
  uint64_t addr = a.a[0], len = a.a[1], off = a.a[5];
  int prot = static_cast<int>(a.a[2]), flags = static_cast<int>(a.a[3]);
  long fd = static_cast<long>(a.a[4]);
  if (len == 0 || len > g.mem.size() || !page_aligned(off)) return -EINVAL;
  len = page_up(len);
  int type = flags & MAP_SHARED_VALIDATE;
  if (type == 0) return -EINVAL;
  bool anon = flags & MAP_ANONYMOUS;
  int host_fd = -1;
  if (!anon) {
    host_fd = g.fds.host(fd);
    if (host_fd < 0) return -EBADF;
    struct stat st;
    if (fstat(host_fd, &st) < 0) return -errno;
    if (S_ISCHR(st.st_mode)) anon = true;  // /dev/zero and friends: zero pages
    else if (!S_ISREG(st.st_mode)) return -ENODEV;
    // A writable shared file mapping would need the file's pages inside guest memory.
    if ((type & MAP_SHARED) && (prot & PROT_WRITE) && !anon) return -ENODEV;
  }
  if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
    if (!page_aligned(addr)) return -EINVAL;
    if (!g.mem.user_range_ok(addr, len)) return -ENOMEM;
    if (!g.as.is_free(addr, len)) {
      if (flags & MAP_FIXED_NOREPLACE) return -EEXIST;
      (void)g.mem.zero(addr, len);
    }
  } else if (addr && page_aligned(addr) && g.mem.user_range_ok(addr, len) && g.as.is_free(addr, len)) {
    // hint honoured
  } else {
    addr = g.as.find_free(len);
    if (addr == 0) return -ENOMEM;
  }
  if (!anon) {
    if (int64_t r = fill_from_file(g, host_fd, addr, len, off); r < 0) {
      (void)g.mem.zero(addr, len);
      return r;
    }
  }
  g.as.add(addr, len);
  return static_cast<int64_t>(addr);
}

int64_t sys_munmap(Guest& g, const SyscallArgs& a) {
  uint64_t addr = a.a[0], len = page_up(a.a[1]);
  if (!page_aligned(addr) || a.a[1] == 0 || a.a[1] > g.mem.size()) return -EINVAL;
  if (!g.mem.user_range_ok(addr, len)) return -EINVAL;
  (void)g.mem.zero(addr, len);
  g.as.remove(addr, len);
  return 0;
}

int64_t sys_mprotect(Guest& g, const SyscallArgs& a) {
  uint64_t addr = a.a[0], len = page_up(a.a[1]);
  if (!page_aligned(addr) || a.a[1] > g.mem.size()) return -EINVAL;
  if (!g.mem.user_range_ok(addr, len) || !g.as.is_mapped(addr, len)) return -ENOMEM;
  return 0;
}

int64_t sys_brk(Guest& g, const SyscallArgs& a) {
  uint64_t want = a.a[0];
  if (want < g.brk_start || want > g.mem.size()) return static_cast<int64_t>(g.brk_cur);
  uint64_t cur_end = page_up(g.brk_cur), new_end = page_up(want);
  if (new_end > cur_end) {
    if (!g.mem.user_range_ok(cur_end, new_end - cur_end) || !g.as.is_free(cur_end, new_end - cur_end))
      return static_cast<int64_t>(g.brk_cur);
    g.as.add(cur_end, new_end - cur_end);
  } else if (new_end < cur_end) {
    (void)g.mem.zero(new_end, cur_end - new_end);
    g.as.remove(new_end, cur_end - new_end);
  }
  g.brk_cur = want;
  return static_cast<int64_t>(want);
}

int64_t sys_mremap(Guest& g, const SyscallArgs& a) {
  uint64_t old = a.a[0], old_len = page_up(a.a[1]), new_len = page_up(a.a[2]), dest = a.a[4];
  int flags = static_cast<int>(a.a[3]);
  if (!page_aligned(old) || new_len == 0 || old_len == 0 || a.a[2] > g.mem.size() || a.a[1] > g.mem.size())
    return -EINVAL;
  if (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED)) return -EINVAL;
  if ((flags & MREMAP_FIXED) && !(flags & MREMAP_MAYMOVE)) return -EINVAL;
  if (!g.mem.user_range_ok(old, old_len) || !g.as.is_mapped(old, old_len)) return -EFAULT;
  if (!(flags & MREMAP_FIXED)) {
    if (new_len <= old_len) {
      (void)g.mem.zero(old + new_len, old_len - new_len);
      g.as.remove(old + new_len, old_len - new_len);
      return static_cast<int64_t>(old);
    }
    if (g.mem.user_range_ok(old + old_len, new_len - old_len) && g.as.is_free(old + old_len, new_len - old_len)) {
      g.as.add(old + old_len, new_len - old_len);
      return static_cast<int64_t>(old);
    }
    if (!(flags & MREMAP_MAYMOVE)) return -ENOMEM;
    dest = g.as.find_free(new_len);
    if (dest == 0) return -ENOMEM;
  } else {
    if (!page_aligned(dest) || !g.mem.user_range_ok(dest, new_len)) return -EINVAL;
    if (dest < old + old_len && old < dest + new_len) return -EINVAL;
    (void)g.mem.zero(dest, new_len);
    g.as.remove(dest, new_len);
  }
  uint64_t keep = old_len < new_len ? old_len : new_len;
  // SAFETY: both ranges checked against guest memory and disjoint.
  std::memcpy(g.mem.user_ptr(dest, keep), g.mem.user_ptr(old, keep), keep);
  (void)g.mem.zero(old, old_len);
  g.as.remove(old, old_len);
  g.as.add(dest, new_len);
  return static_cast<int64_t>(dest);
}

int64_t sys_madvise(Guest& g, const SyscallArgs& a) {
  uint64_t addr = a.a[0], len = page_up(a.a[1]);
  if (!page_aligned(addr) || a.a[1] > g.mem.size()) return -EINVAL;
  if (!g.mem.user_range_ok(addr, len)) return -ENOMEM;
  if (a.a[2] == MADV_DONTNEED) (void)g.mem.zero(addr, len);  // anonymous semantics: zero-fill
  return 0;
}

int64_t sys_ok(Guest&, const SyscallArgs&) { return 0; }

}  // namespace

void register_mem_syscalls(SyscallTable& t) {
  t.add(9, "mmap", sys_mmap);
  t.add(10, "mprotect", sys_mprotect);
  t.add(11, "munmap", sys_munmap);
  t.add(12, "brk", sys_brk);
  t.add(25, "mremap", sys_mremap);
  t.add(26, "msync", sys_ok);
  t.add(28, "madvise", sys_madvise);
  t.add(149, "mlock", sys_ok);
  t.add(150, "munlock", sys_ok);
}

}  // namespace sp::vmm
