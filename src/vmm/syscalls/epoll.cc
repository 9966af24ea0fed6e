// epoll and eventfd for a single-threaded guest (asyncio's event loop): host epoll instances owned
// by the guest's fd table, with guest fd numbers translated on epoll_ctl. The epoll_event data word
// is opaque to the kernel, so the guest's own data comes back unchanged from epoll_wait.
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "vmm/syscalls/dispatch.h"
#include "vmm/syscalls/signal.h"

namespace sp::vmm {
namespace {

// SAFETY (whole file): event buffers are checked with g.mem.user_ptr() for their full size before
// the host call reads or writes them; x86-64 struct epoll_event is 12 bytes (packed) on both sides.

constexpr uint64_t kMaxEvents = 1024;

int64_t install(Guest& g, int host_fd) {
  if (host_fd < 0) return -errno;
  auto r = g.fds.install(UniqueFd(host_fd));
  return r.ok() ? r.value() : -r.error().code;
}

int64_t sys_epoll_create1(Guest& g, const SyscallArgs& a) {
  if (a.a[0] & ~uint64_t{EPOLL_CLOEXEC}) return -EINVAL;
  return install(g, epoll_create1(EPOLL_CLOEXEC));
}

int64_t sys_epoll_create(Guest& g, const SyscallArgs& a) {
  if (static_cast<int64_t>(a.a[0]) <= 0) return -EINVAL;
  return install(g, epoll_create1(EPOLL_CLOEXEC));
}

int64_t sys_epoll_ctl(Guest& g, const SyscallArgs& a) {
  int ep = g.fds.host(static_cast<long>(a.a[0]));
  int fd = g.fds.host(static_cast<long>(a.a[2]));
  if (ep < 0 || fd < 0) return -EBADF;
  auto* ev = reinterpret_cast<epoll_event*>(g.mem.user_ptr(a.a[3], sizeof(epoll_event)));
  if (!ev && a.a[1] != EPOLL_CTL_DEL) return -EFAULT;
  // EPOLLWAKEUP makes a wakeup source that holds off system suspend; Linux drops the flag for a
  // caller without CAP_BLOCK_SUSPEND, which a guest never has, even when the VMM runs as root.
  epoll_event copy{};
  if (ev) {
    copy = *ev;
    copy.events &= ~static_cast<uint32_t>(EPOLLWAKEUP);
  }
  return host_ret(epoll_ctl(ep, static_cast<int>(a.a[1]), fd, ev ? &copy : nullptr));
}

int64_t do_wait(Guest& g, uint64_t epfd, uint64_t events, uint64_t max, int timeout_ms) {
  int ep = g.fds.host(static_cast<long>(epfd));
  if (ep < 0) return -EBADF;
  if (max == 0 || max > kMaxEvents) return -EINVAL;
  auto* ev = reinterpret_cast<epoll_event*>(g.mem.user_ptr(events, max * sizeof(epoll_event)));
  if (!ev) return -EFAULT;
  if (timeout_ms == 0) return host_ret(epoll_wait(ep, ev, static_cast<int>(max), 0));
  // A wait ends with EINTR when a signal for the guest arrives, or already waits and nothing is ready.
  GuestWait w(g);
  if (w.interrupted()) {
    int rc = epoll_wait(ep, ev, static_cast<int>(max), 0);
    return rc == 0 ? -EINTR : host_ret(rc);
  }
  return host_ret(epoll_pwait(ep, ev, static_cast<int>(max), timeout_ms, w.mask()));
}

int64_t sys_epoll_wait(Guest& g, const SyscallArgs& a) {
  return do_wait(g, a.a[0], a.a[1], a.a[2], static_cast<int>(a.a[3]));
}

// The signal mask argument is ignored: signals reach the guest only between syscalls anyway.
int64_t sys_epoll_pwait(Guest& g, const SyscallArgs& a) {
  return do_wait(g, a.a[0], a.a[1], a.a[2], static_cast<int>(a.a[3]));
}

int64_t sys_eventfd2(Guest& g, const SyscallArgs& a) {
  if (a.a[1] & ~uint64_t{EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE}) return -EINVAL;
  return install(g, eventfd(static_cast<unsigned>(a.a[0]), static_cast<int>(a.a[1]) | EFD_CLOEXEC));
}

}  // namespace

void register_epoll_syscalls(SyscallTable& t) {
  t.add(213, "epoll_create", sys_epoll_create);
  t.add(232, "epoll_wait", sys_epoll_wait);
  t.add(233, "epoll_ctl", sys_epoll_ctl);
  t.add(281, "epoll_pwait", sys_epoll_pwait);
  t.add(290, "eventfd2", sys_eventfd2);
  t.add(291, "epoll_create1", sys_epoll_create1);
}

}  // namespace sp::vmm
