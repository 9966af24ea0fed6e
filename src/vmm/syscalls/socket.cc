// Socket syscalls on descriptors the guest was given (the agent channel): options, names and
// shutdown; plus AF_UNIX socketpair (local only). No other new sockets: socket/connect/bind stay
// ENOSYS, so the guest has no network of its own. send/recv work without addresses.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

#include "vmm/syscalls/dispatch.h"
#include "vmm/syscalls/signal.h"

namespace sp::vmm {
namespace {

// SAFETY (whole file): option and address buffers are checked with g.mem.user_ptr() for their
// full length (read from guest memory first) before the host call fills at most that many bytes.

#define HOST_FD(g, fd)              \
  int hfd = (g).fds.host(fd);       \
  if (hfd < 0) return -EBADF

constexpr uint32_t kMaxOptBytes = 256;

bool option_allowed(uint64_t level, uint64_t name) {
  if (level != SOL_SOCKET) return false;
  switch (name) {
    case SO_TYPE: case SO_DOMAIN: case SO_PROTOCOL: case SO_ERROR: case SO_RCVBUF: case SO_SNDBUF:
    case SO_RCVTIMEO_OLD: case SO_SNDTIMEO_OLD: case SO_PASSCRED: case SO_ACCEPTCONN: return true;
    default: return false;
  }
}

int64_t sys_getsockopt(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  if (!option_allowed(a.a[1], a.a[2])) return -ENOPROTOOPT;
  uint32_t len = 0;
  if (!g.mem.read(a.a[4], &len)) return -EFAULT;
  if (len > kMaxOptBytes) len = kMaxOptBytes;
  uint8_t* val = g.mem.user_ptr(a.a[3], len);
  if (!val && len) return -EFAULT;
  socklen_t sl = len;
  int64_t r = host_ret(getsockopt(hfd, static_cast<int>(a.a[1]), static_cast<int>(a.a[2]), val, &sl));
  if (r == 0 && !g.mem.write(a.a[4], static_cast<uint32_t>(sl))) return -EFAULT;
  return r;
}

int64_t sys_setsockopt(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  if (!option_allowed(a.a[1], a.a[2])) return -ENOPROTOOPT;
  if (a.a[4] > kMaxOptBytes) return -EINVAL;
  const uint8_t* val = g.mem.user_ptr(a.a[3], a.a[4]);
  if (!val && a.a[4]) return -EFAULT;
  return host_ret(setsockopt(hfd, static_cast<int>(a.a[1]), static_cast<int>(a.a[2]), val,
                             static_cast<socklen_t>(a.a[4])));
}

int64_t do_name(Guest& g, const SyscallArgs& a, bool peer) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  uint32_t len = 0;
  if (!g.mem.read(a.a[2], &len)) return -EFAULT;
  if (len > sizeof(sockaddr_storage)) len = sizeof(sockaddr_storage);
  auto* addr = reinterpret_cast<sockaddr*>(g.mem.user_ptr(a.a[1], len));
  if (!addr && len) return -EFAULT;
  socklen_t sl = len;
  int64_t r = host_ret(peer ? getpeername(hfd, addr, &sl) : getsockname(hfd, addr, &sl));
  if (r == 0 && !g.mem.write(a.a[2], static_cast<uint32_t>(sl))) return -EFAULT;
  return r;
}

int64_t sys_getsockname(Guest& g, const SyscallArgs& a) { return do_name(g, a, false); }
int64_t sys_getpeername(Guest& g, const SyscallArgs& a) { return do_name(g, a, true); }

int64_t sys_shutdown(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  return host_ret(shutdown(hfd, static_cast<int>(a.a[1])));
}

// sendto/recvfrom on a connected socket (the agent channel); addresses are not supported.
int64_t sys_sendto(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  if (a.a[4]) return -EISCONN;
  const uint8_t* p = g.mem.user_ptr(a.a[1], a.a[2]);
  if (!p && a.a[2]) return -EFAULT;
  if (a.a[2]) {  // as sys_write
    if (int64_t w = wait_ready(g, hfd, POLLOUT, static_cast<int>(a.a[3])); w < 0) return w;
  }
  long rc = send(hfd, p, a.a[2], static_cast<int>(a.a[3]) | MSG_NOSIGNAL);  // our own SIGPIPE below
  if (rc < 0 && errno == EPIPE && !(a.a[3] & MSG_NOSIGNAL)) g.sig.pending |= 1ull << (SIGPIPE - 1);
  return host_ret(rc);
}

int64_t sys_recvfrom(Guest& g, const SyscallArgs& a) {
  HOST_FD(g, static_cast<long>(a.a[0]));
  uint8_t* p = g.mem.user_ptr(a.a[1], a.a[2]);
  if (!p && a.a[2]) return -EFAULT;
  if (a.a[4] && a.a[5]) {  // report an empty source address
    if (!g.mem.write<uint32_t>(a.a[5], 0)) return -EFAULT;
  }
  if (a.a[2]) {  // as sys_read: a signal for the guest ends a wait with EINTR
    if (int64_t w = wait_ready(g, hfd, POLLIN, static_cast<int>(a.a[3])); w < 0) return w;
  }
  return host_ret(recv(hfd, p, a.a[2], static_cast<int>(a.a[3])));
}

int64_t sys_socketpair(Guest& g, const SyscallArgs& a) {
  if (a.a[0] != AF_UNIX) return -EAFNOSUPPORT;
  int type = static_cast<int>(a.a[1]);
  if ((type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != SOCK_STREAM && (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != SOCK_DGRAM &&
      (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != SOCK_SEQPACKET)
    return -EINVAL;
  if (!g.mem.user_range_ok(a.a[3], 8)) return -EFAULT;
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  UniqueFd s0(sv[0]), s1(sv[1]);
  auto g0 = g.fds.install(std::move(s0));
  if (!g0.ok()) return -g0.error().code;
  auto g1 = g.fds.install(std::move(s1));
  if (!g1.ok()) {
    (void)g.fds.close(g0.value());
    return -g1.error().code;
  }
  int out[2] = {g0.value(), g1.value()};
  g.mem.copy_out(a.a[3], out, 8);
  return 0;
}

}  // namespace

void register_socket_syscalls(SyscallTable& t) {
  t.add(44, "sendto", sys_sendto);
  t.add(45, "recvfrom", sys_recvfrom);
  t.add(53, "socketpair", sys_socketpair);
  t.add(48, "shutdown", sys_shutdown);
  t.add(51, "getsockname", sys_getsockname);
  t.add(52, "getpeername", sys_getpeername);
  t.add(54, "setsockopt", sys_setsockopt);
  t.add(55, "getsockopt", sys_getsockopt);
}

}  // namespace sp::vmm
