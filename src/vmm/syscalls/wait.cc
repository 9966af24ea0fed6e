// Waiting syscalls for a single-threaded guest: futex (no other thread can wake a waiter, so a
// wait ends only by timeout or an injected signal), poll/ppoll, select/pselect6 and pause, performed
// with host ppoll() on the descriptors behind the guest's fds. Each ends with EINTR when a signal
// for the guest arrives or already waits (GuestWait), as on Linux.
#include <linux/futex.h>
#include <poll.h>
#include <sys/select.h>

#include <cstdint>
#include <cstring>
#include <ctime>

#include "vmm/syscalls/dispatch.h"
#include "vmm/syscalls/signal.h"

namespace sp::vmm {
namespace {

// SAFETY (whole file): guest arrays and words are copied in/out through g.mem.copy_in/copy_out/
// read/write, which check the whole range; host poll() only sees VMM-local arrays.

constexpr uint64_t kMaxPollFds = FdTable::kMaxFds;

// Linux refuses any other timeout with EINVAL; poll() would take a negative one for "forever".
bool timeout_ok(const timespec& ts) { return ts.tv_sec >= 0 && ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000; }

// Milliseconds until `ts` (relative, timeout_ok), rounded up and clamped to int; -1 for no timeout.
int timeout_ms(const timespec* ts) {
  if (!ts) return -1;
  constexpr int64_t kMaxMs = 0x7fffffff;
  if (ts->tv_sec >= kMaxMs / 1000) return kMaxMs;  // a guest's tv_sec * 1000 may not fit
  int64_t ms = ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000;
  return ms > kMaxMs ? kMaxMs : static_cast<int>(ms);
}

// Waits on translated pollfds; returns the host result or -errno (EINTR: a signal for the guest
// arrived or already waited, and nothing was ready).
int64_t host_poll(Guest& g, pollfd* pfd, uint64_t n, int ms) {
  bool nval[kMaxPollFds] = {};
  for (uint64_t i = 0; i < n; ++i) {
    if (pfd[i].fd < 0) continue;
    int h = g.fds.host(pfd[i].fd);
    if (h < 0) nval[i] = true;
    pfd[i].fd = h;
  }
  int rc;
  if (ms == 0) {  // no wait, so no EINTR either
    rc = ::poll(pfd, n, 0);
    if (rc < 0) return -errno;
  } else {
    GuestWait w(g);
    if (w.interrupted()) {
      rc = ::poll(pfd, n, 0);  // what is ready now is still reported, as Linux does
      if (rc == 0) return -EINTR;
      if (rc < 0) return -errno;
    } else {
      const timespec ts{ms / 1000, (ms % 1000) * 1000000L};
      rc = w.poll(pfd, n, ms < 0 ? nullptr : &ts);
      if (rc < 0) return rc;
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (nval[i]) pfd[i].revents = POLLNVAL, ++rc;
  }
  return rc;
}

int64_t do_poll(Guest& g, uint64_t fds_p, uint64_t n, int ms) {
  if (n > kMaxPollFds) return -EINVAL;
  pollfd pfd[kMaxPollFds];
  if (n && !g.mem.copy_in(pfd, fds_p, n * sizeof(pollfd))) return -EFAULT;
  pollfd orig[kMaxPollFds];
  std::memcpy(orig, pfd, n * sizeof(pollfd));
  int64_t rc = host_poll(g, pfd, n, ms);
  if (rc < 0) return rc;
  for (uint64_t i = 0; i < n; ++i) orig[i].revents = pfd[i].revents;
  if (n) g.mem.copy_out(fds_p, orig, n * sizeof(pollfd));
  return rc;
}

int64_t sys_poll(Guest& g, const SyscallArgs& a) { return do_poll(g, a.a[0], a.a[1], static_cast<int>(a.a[2])); }

int64_t sys_ppoll(Guest& g, const SyscallArgs& a) {
  timespec ts;
  if (a.a[2] && !g.mem.read(a.a[2], &ts)) return -EFAULT;
  if (a.a[2] && !timeout_ok(ts)) return -EINVAL;
  return do_poll(g, a.a[0], a.a[1], timeout_ms(a.a[2] ? &ts : nullptr));
}

int64_t do_select(Guest& g, uint64_t nfds, const uint64_t sets_p[3], int ms) {
  if (nfds > FD_SETSIZE) return -EINVAL;
  uint64_t words = (nfds + 63) / 64;
  uint64_t sets[3][FD_SETSIZE / 64] = {};
  for (int k = 0; k < 3; ++k) {
    if (sets_p[k] && words && !g.mem.copy_in(sets[k], sets_p[k], words * 8)) return -EFAULT;
  }
  pollfd pfd[FD_SETSIZE];
  uint64_t n = 0;
  for (uint64_t fd = 0; fd < nfds; ++fd) {
    uint64_t m = 1ull << (fd % 64);
    short ev = ((sets[0][fd / 64] & m) ? POLLIN : 0) | ((sets[1][fd / 64] & m) ? POLLOUT : 0) |
               ((sets[2][fd / 64] & m) ? POLLPRI : 0);
    if (ev) pfd[n++] = pollfd{static_cast<int>(fd), ev, 0};
  }
  pollfd guest_fds[FD_SETSIZE];
  std::memcpy(guest_fds, pfd, n * sizeof(pollfd));
  int64_t rc = host_poll(g, pfd, n, ms);
  if (rc < 0) return rc;
  uint64_t out[3][FD_SETSIZE / 64] = {};
  int64_t count = 0;
  for (uint64_t i = 0; i < n; ++i) {
    if (pfd[i].revents & POLLNVAL) return -EBADF;
    int fd = guest_fds[i].fd;
    uint64_t m = 1ull << (fd % 64);
    if ((guest_fds[i].events & POLLIN) && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) out[0][fd / 64] |= m, ++count;
    if ((guest_fds[i].events & POLLOUT) && (pfd[i].revents & (POLLOUT | POLLERR))) out[1][fd / 64] |= m, ++count;
    if ((guest_fds[i].events & POLLPRI) && (pfd[i].revents & POLLPRI)) out[2][fd / 64] |= m, ++count;
  }
  for (int k = 0; k < 3; ++k) {
    if (sets_p[k] && words) g.mem.copy_out(sets_p[k], out[k], words * 8);
  }
  return count;
}

int64_t sys_select(Guest& g, const SyscallArgs& a) {
  timespec ts{};
  if (a.a[4]) {
    int64_t tv[2];
    if (!g.mem.copy_in(tv, a.a[4], sizeof tv)) return -EFAULT;
    if (tv[0] < 0 || tv[1] < 0) return -EINVAL;
    // As Linux: whole seconds of tv_usec move to tv_sec (saturating: both are the guest's).
    int64_t carry = tv[1] / 1000000;
    ts = timespec{tv[0] > INT64_MAX - carry ? INT64_MAX : tv[0] + carry, (tv[1] % 1000000) * 1000};
  }
  const uint64_t sets[3] = {a.a[1], a.a[2], a.a[3]};
  return do_select(g, a.a[0], sets, timeout_ms(a.a[4] ? &ts : nullptr));
}

int64_t sys_pselect6(Guest& g, const SyscallArgs& a) {
  timespec ts{};
  if (a.a[4] && !g.mem.read(a.a[4], &ts)) return -EFAULT;
  if (a.a[4] && !timeout_ok(ts)) return -EINVAL;
  const uint64_t sets[3] = {a.a[1], a.a[2], a.a[3]};
  return do_select(g, a.a[0], sets, timeout_ms(a.a[4] ? &ts : nullptr));
}

int64_t sys_pause(Guest& g, const SyscallArgs&) {
  GuestWait w(g);
  if (!w.interrupted()) (void)w.poll(nullptr, 0, nullptr);  // only a signal for the guest ends it
  return -EINTR;
}

int64_t sys_futex(Guest& g, const SyscallArgs& a) {
  int op = static_cast<int>(a.a[1]) & FUTEX_CMD_MASK;
  uint64_t uaddr = a.a[0];
  if (uaddr & 3) return -EINVAL;
  switch (op) {
    case FUTEX_WAIT:
    case FUTEX_WAIT_BITSET: {
      // As Linux, before the value is compared: an empty bitset or an invalid timeout is EINVAL
      // (the timeout used to be slept on as given: clock_nanosleep refused it, and that was
      // answered ETIMEDOUT).
      if (op == FUTEX_WAIT_BITSET && static_cast<uint32_t>(a.a[5]) == 0) return -EINVAL;
      timespec ts{};
      if (a.a[3] && !g.mem.read(a.a[3], &ts)) return -EFAULT;
      if (a.a[3] && !timeout_ok(ts)) return -EINVAL;
      uint32_t cur;
      if (!g.mem.read(uaddr, &cur)) return -EFAULT;
      if (cur != static_cast<uint32_t>(a.a[2])) return -EAGAIN;
      if (!a.a[3]) return sys_pause(g, a);  // no other thread exists to wake us
      int64_t end;
      clockid_t c = CLOCK_MONOTONIC;
      if (op == FUTEX_WAIT_BITSET) {  // absolute deadline
        if (a.a[1] & FUTEX_CLOCK_REALTIME) c = CLOCK_REALTIME;
        end = ns_of(ts);
      } else {
        timespec now;
        clock_gettime(c, &now);
        end = ns_of(now) + ns_of(ts);
      }
      return wait_until(g, c, end) == -EINTR ? -EINTR : -ETIMEDOUT;
    }
    case FUTEX_WAKE_BITSET:
      if (static_cast<uint32_t>(a.a[5]) == 0) return -EINVAL;
      return 0;  // nobody waits
    case FUTEX_WAKE:
    case FUTEX_WAKE_OP:
    case FUTEX_REQUEUE: return 0;  // nobody waits
    case FUTEX_CMP_REQUEUE: {
      uint32_t cur;
      if (!g.mem.read(uaddr, &cur)) return -EFAULT;
      return cur == static_cast<uint32_t>(a.a[5]) ? 0 : -EAGAIN;
    }
    default: return -ENOSYS;
  }
}

}  // namespace

void register_wait_syscalls(SyscallTable& t) {
  t.add(7, "poll", sys_poll);
  t.add(23, "select", sys_select);
  t.add(34, "pause", sys_pause);
  t.add(202, "futex", sys_futex);
  t.add(270, "pselect6", sys_pselect6);
  t.add(271, "ppoll", sys_ppoll);
}

}  // namespace sp::vmm
