// Path syscalls (openat, stat family, access, readlink, unlink, rename, mkdir, getcwd, chdir, ...)
// performed by the VMM in its own mount namespace. Guest opens never follow /proc magic links and
// never yield a procfs descriptor or a device outside a small allowlist, so a guest cannot reach
// the VMM's own memory (/proc/self/mem) or descriptors (/proc/self/fd/N).
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <string>

#include "vmm/syscalls/dispatch.h"

namespace sp::vmm {
namespace {

// SAFETY (whole file): guest buffers go through g.mem.user_ptr()/copy_out(), which check the whole
// range; guest strings through read_cstring(), which bounds the scan to guest memory.

// Reads a guest path; returns 0 or -errno.
int64_t path_arg(Guest& g, uint64_t p, std::string* out) {
  Status st = g.mem.read_cstring(p, PATH_MAX - 1, out);
  return st.ok() ? 0 : -st.error().code;
}

// Host directory descriptor for a guest dirfd: AT_FDCWD stays, others are translated.
int host_dirfd(Guest& g, uint64_t dirfd) {
  int d = static_cast<int>(dirfd);
  return d == AT_FDCWD ? AT_FDCWD : g.fds.host(d);
}

// 0 when the opened descriptor may be handed to the guest, else -EACCES.
int64_t vet_opened(int fd) {
  struct statfs sfs;
  if (fstatfs(fd, &sfs) < 0) return -errno;
  if (sfs.f_type == PROC_SUPER_MAGIC) return -EACCES;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    unsigned ma = major(st.st_rdev), mi = minor(st.st_rdev);
    bool ok = S_ISCHR(st.st_mode) && ((ma == 1 && (mi == 3 || mi == 5 || mi == 7 || mi == 8 || mi == 9)) ||
                                      (ma == 5 && mi == 0) || ma == 136);  // null zero full random urandom tty pts
    if (!ok) return -EACCES;
  }
  return 0;
}

// openat2 with RESOLVE_NO_MAGICLINKS, then vetting. Returns the host fd or -errno.
long open_vetted(int dirfd, const char* path, uint64_t flags, uint64_t mode) {
  open_how how{};
  how.flags = (flags & ~uint64_t{O_CLOEXEC}) | O_CLOEXEC;
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? (mode & 07777) : 0;
  how.resolve = RESOLVE_NO_MAGICLINKS;
  long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);  // SAFETY: how is a live open_how.
  if (fd < 0) return -errno;
  if (long v = vet_opened(static_cast<int>(fd)); v < 0) {
    close(static_cast<int>(fd));
    return v;
  }
  return fd;
}

int64_t do_openat(Guest& g, uint64_t dirfd, uint64_t path_p, uint64_t flags, uint64_t mode) {
  std::string path;
  if (int64_t r = path_arg(g, path_p, &path); r < 0) return r;
  int d = host_dirfd(g, dirfd);
  if (d == -1 && path[0] != '/') return -EBADF;
  long fd = open_vetted(d, path.c_str(), flags, mode);
  if (fd < 0) return fd;
  auto r = g.fds.install(UniqueFd(static_cast<int>(fd)));
  return r.ok() ? r.value() : -r.error().code;
}

int64_t sys_open(Guest& g, const SyscallArgs& a) { return do_openat(g, AT_FDCWD, a.a[0], a.a[1], a.a[2]); }
int64_t sys_openat(Guest& g, const SyscallArgs& a) { return do_openat(g, a.a[0], a.a[1], a.a[2], a.a[3]); }
int64_t sys_creat(Guest& g, const SyscallArgs& a) {
  return do_openat(g, AT_FDCWD, a.a[0], O_CREAT | O_WRONLY | O_TRUNC, a.a[1]);
}

// Shared prologue: resolves path and dirfd; `empty_ok` allows "" with AT_EMPTY_PATH.
#define PATH_AND_DIR(g, dirfd_arg, path_arg_v, flags)                                   \
  std::string path;                                                                     \
  if (int64_t r_ = path_arg(g, path_arg_v, &path); r_ < 0) return r_;                   \
  int d = host_dirfd(g, dirfd_arg);                                                     \
  if (d == -1 && (path.empty() || path[0] != '/')) return -EBADF;                       \
  if (path.empty() && !((flags) & AT_EMPTY_PATH)) return -ENOENT

int64_t do_fstatat(Guest& g, uint64_t dirfd, uint64_t path_p, uint64_t buf, int flags) {
  PATH_AND_DIR(g, dirfd, path_p, flags);
  auto* st = reinterpret_cast<struct stat*>(g.mem.user_ptr(buf, sizeof(struct stat)));
  if (!st) return -EFAULT;
  return host_ret(fstatat(d, path.c_str(), st, flags & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT)));
}

int64_t sys_stat(Guest& g, const SyscallArgs& a) { return do_fstatat(g, AT_FDCWD, a.a[0], a.a[1], 0); }
int64_t sys_lstat(Guest& g, const SyscallArgs& a) {
  return do_fstatat(g, AT_FDCWD, a.a[0], a.a[1], AT_SYMLINK_NOFOLLOW);
}
int64_t sys_newfstatat(Guest& g, const SyscallArgs& a) {
  return do_fstatat(g, a.a[0], a.a[1], a.a[2], static_cast<int>(a.a[3]));
}

int64_t sys_statx(Guest& g, const SyscallArgs& a) {
  int flags = static_cast<int>(a.a[2]);
  PATH_AND_DIR(g, a.a[0], a.a[1], flags);
  auto* stx = reinterpret_cast<struct statx*>(g.mem.user_ptr(a.a[4], sizeof(struct statx)));
  if (!stx) return -EFAULT;
  return host_ret(statx(d, path.c_str(), flags, static_cast<unsigned>(a.a[3]), stx));
}

int64_t do_faccessat(Guest& g, uint64_t dirfd, uint64_t path_p, uint64_t mode, int flags) {
  PATH_AND_DIR(g, dirfd, path_p, flags);
  return host_ret(faccessat(d, path.c_str(), static_cast<int>(mode), flags & (AT_SYMLINK_NOFOLLOW | AT_EACCESS | AT_EMPTY_PATH)));
}
int64_t sys_access(Guest& g, const SyscallArgs& a) { return do_faccessat(g, AT_FDCWD, a.a[0], a.a[1], 0); }
int64_t sys_faccessat(Guest& g, const SyscallArgs& a) { return do_faccessat(g, a.a[0], a.a[1], a.a[2], 0); }
int64_t sys_faccessat2(Guest& g, const SyscallArgs& a) {
  return do_faccessat(g, a.a[0], a.a[1], a.a[2], static_cast<int>(a.a[3]));
}

int64_t do_readlinkat(Guest& g, uint64_t dirfd, uint64_t path_p, uint64_t buf, uint64_t size) {
  PATH_AND_DIR(g, dirfd, path_p, 0);
  if (static_cast<int64_t>(size) <= 0) return -EINVAL;
  uint8_t* out = g.mem.user_ptr(buf, size);
  if (!out) return -EFAULT;
  if (path == "/proc/self/exe") {
    size_t n = g.exe_path.size() < size ? g.exe_path.size() : size;
    std::memcpy(out, g.exe_path.data(), n);
    return static_cast<int64_t>(n);
  }
  if (path.rfind("/proc/", 0) == 0) return -EACCES;  // /proc links describe the VMM, not the guest
  return host_ret(readlinkat(d, path.c_str(), reinterpret_cast<char*>(out), size));
}
int64_t sys_readlink(Guest& g, const SyscallArgs& a) { return do_readlinkat(g, AT_FDCWD, a.a[0], a.a[1], a.a[2]); }
int64_t sys_readlinkat(Guest& g, const SyscallArgs& a) { return do_readlinkat(g, a.a[0], a.a[1], a.a[2], a.a[3]); }

int64_t do_unlinkat(Guest& g, uint64_t dirfd, uint64_t path_p, int flags) {
  PATH_AND_DIR(g, dirfd, path_p, 0);
  return host_ret(unlinkat(d, path.c_str(), flags & AT_REMOVEDIR));
}
int64_t sys_unlink(Guest& g, const SyscallArgs& a) { return do_unlinkat(g, AT_FDCWD, a.a[0], 0); }
int64_t sys_rmdir(Guest& g, const SyscallArgs& a) { return do_unlinkat(g, AT_FDCWD, a.a[0], AT_REMOVEDIR); }
int64_t sys_unlinkat(Guest& g, const SyscallArgs& a) { return do_unlinkat(g, a.a[0], a.a[1], static_cast<int>(a.a[2])); }

int64_t do_mkdirat(Guest& g, uint64_t dirfd, uint64_t path_p, uint64_t mode) {
  PATH_AND_DIR(g, dirfd, path_p, 0);
  return host_ret(mkdirat(d, path.c_str(), static_cast<mode_t>(mode & 07777)));
}
int64_t sys_mkdir(Guest& g, const SyscallArgs& a) { return do_mkdirat(g, AT_FDCWD, a.a[0], a.a[1]); }
int64_t sys_mkdirat(Guest& g, const SyscallArgs& a) { return do_mkdirat(g, a.a[0], a.a[1], a.a[2]); }

int64_t do_renameat(Guest& g, uint64_t od, uint64_t op, uint64_t nd, uint64_t np, unsigned flags) {
  std::string from, to;
  if (int64_t r = path_arg(g, op, &from); r < 0) return r;
  if (int64_t r = path_arg(g, np, &to); r < 0) return r;
  int hod = host_dirfd(g, od), hnd = host_dirfd(g, nd);
  if ((hod == -1 && from[0] != '/') || (hnd == -1 && to[0] != '/')) return -EBADF;
  return host_ret(renameat2(hod, from.c_str(), hnd, to.c_str(), flags & (RENAME_NOREPLACE | RENAME_EXCHANGE)));
}
int64_t sys_rename(Guest& g, const SyscallArgs& a) { return do_renameat(g, AT_FDCWD, a.a[0], AT_FDCWD, a.a[1], 0); }
int64_t sys_renameat(Guest& g, const SyscallArgs& a) { return do_renameat(g, a.a[0], a.a[1], a.a[2], a.a[3], 0); }
int64_t sys_renameat2(Guest& g, const SyscallArgs& a) {
  return do_renameat(g, a.a[0], a.a[1], a.a[2], a.a[3], static_cast<unsigned>(a.a[4]));
}

int64_t sys_getcwd(Guest& g, const SyscallArgs& a) {
  char buf[PATH_MAX];
  if (!getcwd(buf, sizeof buf)) return -errno;
  size_t n = std::strlen(buf) + 1;
  if (n > a.a[1]) return -ERANGE;
  if (!g.mem.copy_out(a.a[0], buf, n)) return -EFAULT;
  return static_cast<int64_t>(n);
}

int64_t sys_chdir(Guest& g, const SyscallArgs& a) {
  std::string path;
  if (int64_t r = path_arg(g, a.a[0], &path); r < 0) return r;
  long fd = open_vetted(AT_FDCWD, path.c_str(), O_PATH | O_DIRECTORY, 0);
  if (fd < 0) return fd;
  UniqueFd owned(static_cast<int>(fd));
  return host_ret(fchdir(owned.get()));
}

int64_t sys_fchdir(Guest& g, const SyscallArgs& a) {
  int hfd = g.fds.host(static_cast<long>(a.a[0]));
  if (hfd < 0) return -EBADF;
  return host_ret(fchdir(hfd));
}

int64_t sys_umask(Guest&, const SyscallArgs& a) { return umask(static_cast<mode_t>(a.a[0] & 0777)); }

}  // namespace

void register_fs_syscalls(SyscallTable& t) {
  t.add(2, "open", sys_open);
  t.add(4, "stat", sys_stat);
  t.add(6, "lstat", sys_lstat);
  t.add(21, "access", sys_access);
  t.add(79, "getcwd", sys_getcwd);
  t.add(80, "chdir", sys_chdir);
  t.add(81, "fchdir", sys_fchdir);
  t.add(82, "rename", sys_rename);
  t.add(83, "mkdir", sys_mkdir);
  t.add(84, "rmdir", sys_rmdir);
  t.add(85, "creat", sys_creat);
  t.add(87, "unlink", sys_unlink);
  t.add(89, "readlink", sys_readlink);
  t.add(95, "umask", sys_umask);
  t.add(257, "openat", sys_openat);
  t.add(258, "mkdirat", sys_mkdirat);
  t.add(262, "newfstatat", sys_newfstatat);
  t.add(263, "unlinkat", sys_unlinkat);
  t.add(264, "renameat", sys_renameat);
  t.add(267, "readlinkat", sys_readlinkat);
  t.add(269, "faccessat", sys_faccessat);
  t.add(316, "renameat2", sys_renameat2);
  t.add(332, "statx", sys_statx);
  t.add(439, "faccessat2", sys_faccessat2);
}

}  // namespace sp::vmm
