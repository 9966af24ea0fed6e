// libsandpool_clone.so, memory layout of the template (its anonymous memory in a sealed memfd, or in huge pages); not the clones' isolation.
//
// Why: a fork copies one page-table entry per 4 KiB page of private anonymous memory (≈ 60 MiB
// here, 15,000 entries, 4-6 ms on this VM). Two ways to copy fewer:
// - Shared (the default): the template moves that memory into one memfd, sealed against writes,
//   and maps it back MAP_PRIVATE at the same addresses. A fork copies no entries for a private
//   file mapping the parent has not written since (the child faults pages in as it reads them,
//   16 at a time), and a write still copies the page into the writer alone. The libraries' data
//   and RELRO mappings that hold pages the loader or the imports wrote (≈ 220 with numpy, pandas
//   and matplotlib) move too, whole and with their protection: otherwise each fork copies their
//   entries, ≈ 200 KiB of page tables per sandbox and half the fork's time
//   (bench/results/sandbox-2026-11-29.md, 15:29-16:02; an earlier attempt at 12:00-12:12 saw
//   executes slower with it, which two later series of A/B pairs did not reproduce).
// - Huge pages: one PMD per 2 MiB huge page instead of 512 entries; a clone that later writes
//   to a huge page it shares splits the PMD in its own page table and copies only the 4 KiB it
//   wrote. MADV_COLLAPSE only builds huge pages over 2 MiB-aligned ranges inside one mapping,
//   and CPython maps each 1 MiB object arena on its own, between shared libraries (36 arenas
//   after numpy, pandas and pyplot), so almost none of them qualify; handing Python its arenas
//   from one 2 MiB-aligned reservation makes them one mapping that does.
#include <errno.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "sandbox/template_clone.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older kernels answer EINVAL
#endif

namespace {

// CPython's PyObjectArenaAllocator (cpython/objimpl.h), a stable part of its C API.
struct ArenaAllocator {
  void* ctx;
  void* (*alloc)(void* ctx, size_t size);
  void (*free)(void* ctx, void* ptr, size_t size);
};

constexpr size_t kArenaBytes = 1u << 20;  // CPython ≥ 3.10 on 64-bit; other sizes go to the old allocator
constexpr size_t kMaxArenaSlots = 4096;

ArenaAllocator g_prev{};
char* g_region = nullptr;
size_t g_slots = 0;      // slots in the region
size_t g_next = 0;       // slots handed out at least once
uint32_t g_free[kMaxArenaSlots];
size_t g_nfree = 0;

// Both run under the GIL (CPython's obmalloc calls them), so the slot list needs no lock.
void* arena_alloc(void*, size_t size) {
  if (size == kArenaBytes) {
    if (g_nfree > 0) return g_region + static_cast<size_t>(g_free[--g_nfree]) * kArenaBytes;
    if (g_next < g_slots) return g_region + g_next++ * kArenaBytes;
  }
  return g_prev.alloc(g_prev.ctx, size);
}

void arena_free(void*, void* ptr, size_t size) {
  char* p = static_cast<char*>(ptr);
  if (g_region && p >= g_region && p < g_region + g_slots * kArenaBytes) {
    // Give the memory back (in a clone: drop its view of the template's pages); the slot is reused.
    // SAFETY: p is a slot of our reservation that Python no longer uses (it is freeing it).
    madvise(p, kArenaBytes, MADV_DONTNEED);
    g_free[g_nfree++] = static_cast<uint32_t>((p - g_region) / kArenaBytes);
    return;
  }
  g_prev.free(g_prev.ctx, ptr, size);
}

// What the kernel offers, read while /sys and /proc are still visible: sp_tpl_init then pivots
// the template into a root that has neither.
struct HostThp {
  bool read = false;
  bool disabled = true;        // THP "never" or absent from the kernel
  size_t huge_bytes = 2u << 20;
  int smaps_fd = -1;           // /proc/self/smaps; read again (from offset 0) for the current mappings
};
HostThp g_thp;

void read_host_thp() {
  if (g_thp.read) return;
  g_thp.read = true;
  char buf[128] = {};
  if (int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC); fd >= 0) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    g_thp.disabled = n <= 0 || std::strstr(buf, "[never]") != nullptr;
  }
  if (FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "re")) {
    unsigned long v = 0;
    if (std::fscanf(f, "%lu", &v) == 1 && v >= 4096 && (v & (v - 1)) == 0) g_thp.huge_bytes = v;
    std::fclose(f);
  }
  g_thp.smaps_fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
}

void close_smaps() {  // once done: clones must not inherit it
  if (g_thp.smaps_fd >= 0) close(g_thp.smaps_fd);
  g_thp.smaps_fd = -1;
}

struct Range {
  uintptr_t lo, hi;
  bool resident;  // Rss above 0 (file mappings: Anonymous above 0, pages copied on write)
  bool plain;     // none of the VmFlags that sharing must keep away from (see private_ranges)
  bool file;      // a library's data or RELRO: copied whole (its absent pages are the file's)
  bool writable;
};

bool has_flag(const char* flags, const char* two) {
  for (const char* f = flags; *f;) {
    while (*f == ' ') ++f;
    if (f[0] == two[0] && f[1] == two[1] && (f[2] == ' ' || f[2] == '\0' || f[2] == '\n')) return true;
    while (*f && *f != ' ') ++f;
  }
  return false;
}

// Private writable anonymous mappings (the heap included, the stack not): where the template's
// objects live and what a fork copies entry by entry; and the private, non-executable file
// mappings (a library's data or RELRO), of which only those holding copied-on-write pages move.
std::vector<Range> private_ranges() {
  std::vector<Range> out;
  if (g_thp.smaps_fd < 0) return out;
  std::string text;
  char buf[65536];
  off_t at = 0;
  for (ssize_t n; (n = pread(g_thp.smaps_fd, buf, sizeof buf, at)) > 0; at += n) text.append(buf, static_cast<size_t>(n));
  bool in_range = false;  // the fields below a header line belong to out.back()
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    unsigned long lo = 0, hi = 0, off = 0, inode = 0, kib = 0;
    char perms[8] = {};
    unsigned dmaj = 0, dmin = 0;
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %x:%x %lu %n", &lo, &hi, perms, &off, &dmaj, &dmin, &inode,
                    &path_at) >= 7) {
      const char* path = line.c_str() + path_at;
      const bool anon = std::strcmp(perms, "rw-p") == 0 && inode == 0 && (*path == '\0' || std::strcmp(path, "[heap]") == 0);
      // A library's (or the interpreter's) data or RELRO, private and not executable.
      const bool file = (std::strcmp(perms, "rw-p") == 0 || std::strcmp(perms, "r--p") == 0) && inode != 0 && *path == '/';
      in_range = anon || file;
      if (in_range) out.push_back({lo, hi, false, false, file, perms[1] == 'w'});
    } else if (in_range && !out.back().file && std::sscanf(line.c_str(), "Rss: %lu kB", &kib) == 1) {
      out.back().resident = kib > 0;
    } else if (in_range && out.back().file && std::sscanf(line.c_str(), "Anonymous: %lu kB", &kib) == 1) {
      out.back().resident = kib > 0;
    } else if (in_range && line.compare(0, 8, "VmFlags:") == 0) {
      // Left alone: don't-copy and wipe-on-fork memory (a fork must not hand it over), locked
      // or don't-dump memory (secrets: OpenSSL's secure heap), a stack that grows down, device
      // and userfaultfd mappings, sealed ones.
      const char* flags = line.c_str() + 8;
      out.back().plain = has_flag(flags, "rd") && (has_flag(flags, "wr") || !out.back().writable);
      for (const char* no : {"sh", "dc", "wf", "lo", "dd", "gd", "io", "pf", "um", "uw", "sl", "ss"})
        if (has_flag(flags, no)) out.back().plain = false;
    }
  }
  return out;
}

// Room after the last range for mremap to grow a range into (glibc's realloc of a chunk it
// mapped on its own): the file reads as zeros there instead of raising SIGBUS past its end.
constexpr uint64_t kGrowthRoom = 64ull << 30;

bool pwrite_all(int fd, const char* p, size_t n, off_t at) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, at);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
    at += w;
  }
  return true;
}

}  // namespace

extern "C" int sp_tpl_memory_open(void) {
  read_host_thp();
  return g_thp.smaps_fd >= 0 ? 0 : -ENOENT;
}

extern "C" int64_t sp_tpl_share_memory(int32_t* ranges_out) {
  *ranges_out = 0;
  read_host_thp();
  if (g_thp.smaps_fd < 0) return -ENOENT;
  std::vector<Range> all = private_ranges();
  close_smaps();
  std::vector<Range> ranges;
  uint64_t total = 0;
  for (const Range& r : all) {
    if (!r.resident || !r.plain) continue;
    ranges.push_back(r);
    total += r.hi - r.lo;
  }
  if (ranges.empty()) return 0;
  int fd = memfd_create("sandpool-template", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -errno;
  if (ftruncate(fd, static_cast<off_t>(total + kGrowthRoom)) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  // From here until a range is mapped again, nothing may write to it: what is written after its
  // copy would be lost. So no allocation (the list above is only read), the page list on the
  // stack (never shared), and no signal handler running in between. The caller has one thread.
  sigset_t all_signals, old;
  sigfillset(&all_signals);
  pthread_sigmask(SIG_SETMASK, &all_signals, &old);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  unsigned char resident[4096];
  const size_t window = sizeof resident * page;
  int64_t copied = 0, err = 0;
  uint64_t file_at = 0;
  int32_t moved = 0;  // *ranges_out is the caller's memory, perhaps in a range being moved: set after
  for (const Range& r : ranges) {
    // SAFETY: a file range is one of our private, readable file mappings with copied-on-write
    // pages (a library's data or RELRO: the loader maps them only over the file's own pages, .bss
    // past the file being an anonymous mapping of its own). pwrite reads it in the kernel, so a
    // page that could not be read (a mapping past its file's end, were one ever here) fails the
    // write with EFAULT instead of raising SIGBUS: the range then keeps its memory, as below.
    if (r.file && !pwrite_all(fd, reinterpret_cast<const char*>(r.lo), r.hi - r.lo, static_cast<off_t>(file_at))) {
      err = -(errno ? errno : EIO);
      break;
    }
    if (r.file) copied += static_cast<int64_t>(r.hi - r.lo);
    // Anonymous memory: only the resident pages are copied, the rest reads as zeros in the file as it did here.
    for (uintptr_t a = r.lo; !r.file && a < r.hi && err == 0; a += window) {
      const size_t len = std::min<size_t>(window, r.hi - a);
      // SAFETY: [a, a + len) lies inside one of our private anonymous mappings, which stays
      // mapped and unwritten until the mmap below; mincore and pwrite only read it.
      if (mincore(reinterpret_cast<void*>(a), len, resident) != 0) {
        err = -errno;
        break;
      }
      const size_t pages = len / page;
      for (size_t i = 0; i < pages;) {
        if (!(resident[i] & 1)) {
          ++i;
          continue;
        }
        size_t j = i;
        while (j < pages && (resident[j] & 1)) ++j;
        const off_t at = static_cast<off_t>(file_at + (a - r.lo) + i * page);
        if (!pwrite_all(fd, reinterpret_cast<const char*>(a + i * page), (j - i) * page, at)) {
          err = -(errno ? errno : EIO);
          break;
        }
        copied += static_cast<int64_t>((j - i) * page);
        i = j;
      }
    }
    if (err != 0) break;  // this range keeps its anonymous memory; the ones before are shared
    // SAFETY: replaces the range with the file holding its exact contents, at the same address
    // and protection; private, so this process's later writes stay its own.
    void* m = mmap(reinterpret_cast<void*>(r.lo), r.hi - r.lo, r.writable ? PROT_READ | PROT_WRITE : PROT_READ,
                   MAP_PRIVATE | MAP_FIXED, fd, static_cast<off_t>(file_at));
    if (m == MAP_FAILED) {
      err = -errno;
      break;
    }
    file_at += r.hi - r.lo;
    ++moved;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  *ranges_out = moved;
  // Nobody may change the pages from now on, whoever gets hold of the file.
  if (err == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) err = -errno;
  close(fd);
  return err != 0 ? err : copied;
}

extern "C" int sp_tpl_arena_region(uint64_t bytes) {
  using GetSet = void (*)(ArenaAllocator*);
  // SAFETY: these CPython functions have had this signature since 3.4 (cpython/objimpl.h);
  // dlsym finds them only when we are loaded into a Python process.
  auto get = reinterpret_cast<GetSet>(dlsym(RTLD_DEFAULT, "PyObject_GetArenaAllocator"));
  auto set = reinterpret_cast<GetSet>(dlsym(RTLD_DEFAULT, "PyObject_SetArenaAllocator"));
  if (!get || !set) return -ENOSYS;  // not loaded into a Python process
  if (g_region) return -EALREADY;
  read_host_thp();
  const size_t huge = g_thp.huge_bytes;
  size_t slots = static_cast<size_t>(bytes / kArenaBytes);
  if (slots == 0) return -EINVAL;
  if (slots > kMaxArenaSlots) slots = kMaxArenaSlots;
  const size_t len = slots * kArenaBytes;
  // Reserve len + one huge page and trim both ends so the region starts on a huge-page boundary.
  // MAP_NORESERVE: only the arenas Python touches cost memory.
  void* m = mmap(nullptr, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return -errno;
  // SAFETY: we own [raw, raw + len + huge) and unmap only its parts outside [start, start + len).
  uintptr_t raw = reinterpret_cast<uintptr_t>(m);
  uintptr_t start = (raw + huge - 1) & ~(static_cast<uintptr_t>(huge) - 1);
  if (start > raw) munmap(m, start - raw);
  if (size_t tail = raw + len + huge - (start + len); tail > 0) munmap(reinterpret_cast<void*>(start + len), tail);
  g_region = reinterpret_cast<char*>(start);
  g_slots = slots;
  get(&g_prev);
  ArenaAllocator mine{nullptr, arena_alloc, arena_free};
  set(&mine);
  return 0;
}

extern "C" int64_t sp_tpl_collapse_thp(int32_t* failures, int32_t* first_errno) {
  *failures = 0;
  *first_errno = 0;
  read_host_thp();
  const bool no_smaps = g_thp.smaps_fd < 0;
  if (g_thp.disabled || no_smaps) {
    close_smaps();
    return no_smaps ? -ENOENT : -EOPNOTSUPP;
  }
  const size_t huge = g_thp.huge_bytes;
  const size_t small = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident(huge / small);
  int64_t collapsed = 0;
  for (const Range& r : private_ranges()) {
    if (r.file) continue;
    for (uintptr_t a = (r.lo + huge - 1) & ~(huge - 1); a + huge <= r.hi; a += huge) {
      // SAFETY: [a, a + huge) lies inside one of our private anonymous mappings; mincore and
      // MADV_COLLAPSE neither change its contents nor its protection.
      void* p = reinterpret_cast<void*>(a);
      // Only mostly-populated ranges: collapsing fills the holes, and a nearly empty range
      // would cost the template up to 2 MiB for a few page-table entries less per fork.
      if (mincore(p, huge, resident.data()) != 0) continue;
      size_t present = 0;
      for (unsigned char v : resident) present += v & 1;
      if (present * 2 < resident.size()) continue;
      if (madvise(p, huge, MADV_COLLAPSE) == 0) {
        collapsed += static_cast<int64_t>(huge);
      } else {
        if (*failures == 0) *first_errno = errno;
        ++*failures;
      }
    }
  }
  close_smaps();
  return collapsed;
}
