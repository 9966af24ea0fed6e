// Descriptor syscalls (read/write families, close, fstat, lseek, getdents64, fcntl, dup*, pipe2,
// the terminal ioctls a REPL needs, ftruncate, fsync, ...) performed by the VMM on the host
// descriptors behind the guest's fd table. Path-based calls are in fs.cc, socket calls in socket.cc.
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>

#include "vmm/syscalls/async_io.h"
#include "vmm/syscalls/dispatch.h"
#include "vmm/syscalls/signal.h"

namespace sp::vmm {
namespace {

// SAFETY (whole file): every guest buffer goes through g.mem.user_ptr(), which returns a host
// pointer only when the complete [ptr, ptr+len) range lies in guest user memory; the host calls
// then read or write at most len bytes there.

#define HOST_FD(g, fd)              \
  int hfd = (g).fds.host(fd);       \
  if (hfd < 0) return -EBADF

// Writes to a pipe or socket with no reader fail with EPIPE, writes past RLIMIT_FSIZE with EFBIG,
// and, as on Linux, raise SIGPIPE / SIGXFSZ in the guest (the VMM itself ignores both).
int64_t write_ret(Guest& g, long rc) {
  if (rc < 0 && errno == EPIPE) g.sig.pending |= 1ull << (SIGPIPE - 1);
  if (rc < 0 && errno == EFBIG) g.sig.pending |= 1ull << (SIGXFSZ - 1);
  return host_ret(rc);
}

// A read or write that would block waits in wait_ready() first, so that a signal for the guest
// ends it with EINTR (one arriving during the wait, or one already waiting), as on Linux.
int64_t sys_read(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  uint8_t* p = g.mem.user_ptr(a.a[1], a.a[2]);
  if (!p && a.a[2]) return -EFAULT;
  if (a.a[2]) {
    if (int64_t w = wait_ready(g, hfd, POLLIN); w < 0) return w;
  }
  return host_ret(read(hfd, p, a.a[2]));
}

int64_t sys_write(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  const uint8_t* p = g.mem.user_ptr(a.a[1], a.a[2]);
  if (!p && a.a[2]) return -EFAULT;
  if (a.a[2]) {
    if (int64_t w = wait_ready(g, hfd, POLLOUT); w < 0) return w;
  }
  return write_ret(g, write(hfd, p, a.a[2]));
}

int64_t sys_pread(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  uint8_t* p = g.mem.user_ptr(a.a[1], a.a[2]);
  if (!p && a.a[2]) return -EFAULT;
  return host_ret(pread(hfd, p, a.a[2], static_cast<off_t>(a.a[3])));
}

int64_t sys_pwrite(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  const uint8_t* p = g.mem.user_ptr(a.a[1], a.a[2]);
  if (!p && a.a[2]) return -EFAULT;
  return write_ret(g, pwrite(hfd, p, a.a[2], static_cast<off_t>(a.a[3])));
}

// Translates a guest iovec array into host iovecs. Returns 0 or -errno.
int64_t load_iov(Guest& g, uint64_t iov_ptr, uint64_t count, iovec* out) {
  if (count > IOV_MAX) return -EINVAL;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t e[2];
    if (!g.mem.copy_in(e, iov_ptr + i * 16, 16)) return -EFAULT;
    uint8_t* p = g.mem.user_ptr(e[0], e[1]);
    if (!p && e[1]) return -EFAULT;
    out[i] = iovec{p, e[1]};
  }
  return 0;
}

int64_t sys_readv(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  iovec iov[IOV_MAX];
  if (int64_t r = load_iov(g, a.a[1], a.a[2], iov); r < 0) return r;
  bool any = false;  // Linux answers an all-empty readv at once
  for (uint64_t i = 0; i < a.a[2]; ++i) any |= iov[i].iov_len != 0;
  if (any) {
    if (int64_t w = wait_ready(g, hfd, POLLIN); w < 0) return w;  // as sys_read
  }
  return host_ret(readv(hfd, iov, static_cast<int>(a.a[2])));
}

int64_t sys_writev(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  iovec iov[IOV_MAX];
  if (int64_t r = load_iov(g, a.a[1], a.a[2], iov); r < 0) return r;
  bool any = false;
  for (uint64_t i = 0; i < a.a[2]; ++i) any |= iov[i].iov_len != 0;
  if (any) {
    if (int64_t w = wait_ready(g, hfd, POLLOUT); w < 0) return w;  // as sys_write
  }
  return write_ret(g, writev(hfd, iov, static_cast<int>(a.a[2])));
}

int64_t sys_close(Guest& g, const SyscallArgs& a) {
  long fd = static_cast<long>(a.a[0]);
  if (!g.fds.close(fd).ok()) return -EBADF;
  std::erase(g.async_fds, static_cast<int>(fd));
  return 0;
}

int64_t sys_close_range(Guest& g, const SyscallArgs& a) {
  // Linux's bounds and flags are unsigned ints. One process with no exec: UNSHARE has nothing to
  // unshare, and CLOEXEC marks what never closes (as F_SETFD below), so it closes nothing.
  uint32_t first = static_cast<uint32_t>(a.a[0]), last32 = static_cast<uint32_t>(a.a[1]);
  uint32_t flags = static_cast<uint32_t>(a.a[2]);
  if ((flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) != 0 || first > last32) return -EINVAL;
  if (flags & CLOSE_RANGE_CLOEXEC) return 0;
  uint64_t last = last32 < FdTable::kMaxFds ? last32 : FdTable::kMaxFds - 1;
  for (uint64_t fd = first; fd <= last; ++fd) {
    if (g.fds.close(static_cast<long>(fd)).ok()) std::erase(g.async_fds, static_cast<int>(fd));  // as close()
  }
  return 0;
}

int64_t sys_fstat(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  auto* st = reinterpret_cast<struct stat*>(g.mem.user_ptr(a.a[1], sizeof(struct stat)));
  if (!st) return -EFAULT;
  return host_ret(fstat(hfd, st));
}

int64_t sys_fstatfs(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  auto* st = reinterpret_cast<struct statfs*>(g.mem.user_ptr(a.a[1], sizeof(struct statfs)));
  if (!st) return -EFAULT;
  return host_ret(fstatfs(hfd, st));
}

int64_t sys_lseek(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  return host_ret(lseek(hfd, static_cast<off_t>(a.a[1]), static_cast<int>(a.a[2])));
}

int64_t sys_getdents64(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  uint8_t* p = g.mem.user_ptr(a.a[1], a.a[2]);
  if (!p) return -EFAULT;
  return host_ret(syscall(SYS_getdents64, hfd, p, a.a[2]));  // SAFETY: p..p+len checked above.
}

// O_ASYNC belongs to the open file, which a dup shares: the copy is listed in async_fds when the
// original is (so SIGIO still comes after the original is closed), and a descriptor a dup2
// replaced is forgotten as close() forgets it.
void note_dup(Guest& g, long oldfd, long newfd) {
  std::erase(g.async_fds, static_cast<int>(newfd));
  if (std::find(g.async_fds.begin(), g.async_fds.end(), static_cast<int>(oldfd)) != g.async_fds.end())
    g.async_fds.push_back(static_cast<int>(newfd));
}

int64_t dup_to(Guest& g, long oldfd, int hfd, long min_fd) {
  UniqueFd copy(fcntl(hfd, F_DUPFD_CLOEXEC, 3));
  if (!copy) return -errno;
  auto r = g.fds.install(std::move(copy), min_fd);
  if (!r.ok()) return -r.error().code;
  note_dup(g, oldfd, r.value());
  return r.value();
}

int64_t sys_dup(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  return dup_to(g, static_cast<long>(a.a[0]), hfd, 0);
}

int64_t dup_at(Guest& g, long oldfd, long newfd) {
  HOST_FD(g, oldfd);
  if (newfd < 0 || newfd >= FdTable::kMaxFds) return -EBADF;
  UniqueFd copy(fcntl(hfd, F_DUPFD_CLOEXEC, 3));
  if (!copy) return -errno;
  (void)g.fds.install_at(newfd, std::move(copy));
  note_dup(g, oldfd, newfd);
  return newfd;
}

int64_t sys_dup2(Guest& g, const SyscallArgs& a) {
  long o = static_cast<long>(a.a[0]), n = static_cast<long>(a.a[1]);
  if (o == n) return g.fds.host(o) < 0 ? -EBADF : n;
  return dup_at(g, o, n);
}

int64_t sys_dup3(Guest& g, const SyscallArgs& a) {
  long o = static_cast<long>(a.a[0]), n = static_cast<long>(a.a[1]);
  if (o == n || (a.a[2] & ~uint64_t{O_CLOEXEC})) return -EINVAL;
  return dup_at(g, o, n);
}

int64_t sys_fcntl(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  int cmd = static_cast<int>(a.a[1]);
  switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: return dup_to(g, static_cast<long>(a.a[0]), hfd, static_cast<long>(a.a[2]));
    case F_GETFD: return FD_CLOEXEC;  // no exec in the guest: close-on-exec has no effect
    case F_SETFD: return 0;
    case F_GETFL: return host_ret(fcntl(hfd, F_GETFL));
    case F_SETFL: {
      long fd = static_cast<long>(a.a[0]);
      int want_async = (a.a[2] & O_ASYNC) != 0;
      int is_async = (fcntl(hfd, F_GETFL) & O_ASYNC) != 0;
      if (want_async != is_async) {
        if (int64_t r = set_async(g, fd, hfd, want_async); r < 0) return r;
      }
      int keep = fcntl(hfd, F_GETFL) & O_ASYNC;
      return host_ret(fcntl(hfd, F_SETFL, static_cast<int>(a.a[2] & (O_NONBLOCK | O_APPEND)) | keep));
    }
    case F_SETOWN:
      g.async_owner = static_cast<int>(a.a[2]);  // signals always go to this (the only) process
      return 0;
    case F_GETOWN: return g.async_owner;
    case F_SETOWN_EX: {  // glibc's F_SETOWN/F_GETOWN go through the _EX forms
      f_owner_ex o;
      if (!g.mem.read(a.a[2], &o)) return -EFAULT;
      g.async_owner = o.pid;
      return 0;
    }
    case F_GETOWN_EX: {
      f_owner_ex o{F_OWNER_PID, g.async_owner};
      return g.mem.write(a.a[2], o) ? 0 : -EFAULT;
    }
    case F_GETLK:
    case F_SETLK:
    case F_SETLKW: {
      auto* fl = reinterpret_cast<struct flock*>(g.mem.user_ptr(a.a[2], sizeof(struct flock)));
      if (!fl) return -EFAULT;
      return host_ret(fcntl(hfd, cmd, fl));
    }
    default: return -EINVAL;
  }
}

int64_t sys_ioctl(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  unsigned long req = a.a[1];
  size_t arg_bytes;
  switch (req) {
    case TCGETS: case TCSETS: case TCSETSW: case TCSETSF: arg_bytes = 36; break;  // kernel struct termios
    case TIOCGWINSZ: case TIOCSWINSZ: arg_bytes = sizeof(winsize); break;
    case TIOCGPGRP: case FIONREAD: case FIONBIO: arg_bytes = sizeof(int); break;
    case FIOCLEX: case FIONCLEX: return 0;
    default: return -ENOTTY;
  }
  uint8_t* p = g.mem.user_ptr(a.a[2], arg_bytes);
  if (!p) return -EFAULT;
  return host_ret(ioctl(hfd, req, p));
}

int64_t sys_pipe2(Guest& g, const SyscallArgs& a) {
  if (a.a[1] & ~uint64_t{O_CLOEXEC | O_NONBLOCK | O_DIRECT}) return -EINVAL;
  if (!g.mem.user_range_ok(a.a[0], 8)) return -EFAULT;
  int p[2];
  if (pipe2(p, static_cast<int>(a.a[1]) | O_CLOEXEC) < 0) return -errno;
  UniqueFd r(p[0]), w(p[1]);
  auto gr = g.fds.install(std::move(r));
  if (!gr.ok()) return -gr.error().code;
  auto gw = g.fds.install(std::move(w));
  if (!gw.ok()) {
    (void)g.fds.close(gr.value());
    return -gw.error().code;
  }
  int out[2] = {gr.value(), gw.value()};
  g.mem.copy_out(a.a[0], out, 8);
  return 0;
}

int64_t sys_pipe(Guest& g, const SyscallArgs& a) {
  SyscallArgs b = a;
  b.a[1] = 0;
  return sys_pipe2(g, b);
}

int64_t sys_ftruncate(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  return host_ret(ftruncate(hfd, static_cast<off_t>(a.a[1])));
}

int64_t sys_fsync(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  return host_ret(fsync(hfd));
}

int64_t sys_flock(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  return host_ret(flock(hfd, static_cast<int>(a.a[1])));
}

}  // namespace

void register_file_syscalls(SyscallTable& t) {
  t.add(0, "read", sys_read);
  t.add(1, "write", sys_write);
  t.add(3, "close", sys_close);
  t.add(5, "fstat", sys_fstat);
  t.add(8, "lseek", sys_lseek);
  t.add(16, "ioctl", sys_ioctl);
  t.add(17, "pread64", sys_pread);
  t.add(18, "pwrite64", sys_pwrite);
  t.add(19, "readv", sys_readv);
  t.add(20, "writev", sys_writev);
  t.add(22, "pipe", sys_pipe);
  t.add(32, "dup", sys_dup);
  t.add(33, "dup2", sys_dup2);
  t.add(72, "fcntl", sys_fcntl);
  t.add(73, "flock", sys_flock);
  t.add(74, "fsync", sys_fsync);
  t.add(75, "fdatasync", sys_fsync);
  t.add(77, "ftruncate", sys_ftruncate);
  t.add(138, "fstatfs", sys_fstatfs);
  t.add(217, "getdents64", sys_getdents64);
  t.add(292, "dup3", sys_dup3);
  t.add(293, "pipe2", sys_pipe2);
  t.add(436, "close_range", sys_close_range);
}

}  // namespace sp::vmm
