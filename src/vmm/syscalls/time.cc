// Time and randomness syscalls: clock_gettime/getres, gettimeofday, time, nanosleep,
// clock_nanosleep, getrandom, all answered from the host's clocks and entropy.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/time.h>

#include <ctime>

#include "vmm/syscalls/async_io.h"
#include "vmm/syscalls/dispatch.h"
#include "vmm/syscalls/signal.h"

namespace sp::vmm {
namespace {

// SAFETY (whole file): guest buffers are reached only through g.mem.read/write/user_ptr, which
// check the whole range against guest user memory.

bool clock_ok(uint64_t id) { return id <= 7; }  // CLOCK_REALTIME .. CLOCK_BOOTTIME

int64_t sys_clock_gettime(Guest& g, const SyscallArgs& a) {
  if (!clock_ok(a.a[0])) return -EINVAL;
  timespec ts;
  clock_gettime(static_cast<clockid_t>(a.a[0]), &ts);
  return g.mem.write(a.a[1], ts) ? 0 : -EFAULT;
}

int64_t sys_clock_getres(Guest& g, const SyscallArgs& a) {
  if (!clock_ok(a.a[0])) return -EINVAL;
  timespec ts;
  clock_getres(static_cast<clockid_t>(a.a[0]), &ts);
  if (a.a[1] && !g.mem.write(a.a[1], ts)) return -EFAULT;
  return 0;
}

int64_t sys_gettimeofday(Guest& g, const SyscallArgs& a) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  if (a.a[0] && !g.mem.write(a.a[0], tv)) return -EFAULT;
  if (a.a[1] && !g.mem.write(a.a[1], uint64_t{0})) return -EFAULT;
  return 0;
}

int64_t sys_time(Guest& g, const SyscallArgs& a) {
  int64_t t = ::time(nullptr);
  if (a.a[0] && !g.mem.write(a.a[0], t)) return -EFAULT;
  return t;
}

// Nanoseconds of a timespec, its seconds capped at 2^32 (136 years) so that a guest's huge
// request cannot overflow (a clock's now plus the cap still fits in 63 bits).
int64_t ns_of(const timespec& t) {
  const int64_t s = t.tv_sec < (int64_t{1} << 32) ? static_cast<int64_t>(t.tv_sec) : int64_t{1} << 32;
  return s * 1000000000 + t.tv_nsec;
}
timespec ts_of(int64_t ns) { return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)}; }

// Sleeps on the host; a kick (SIGINT injection) or the guest's SIGIO interrupts it with EINTR,
// as a signal would. A signal may already wait for the guest when the sleep begins: one that
// stopped the guest as it entered this syscall (pending, delivered after it), or the host's io
// signal that came after the trap (its handler only sets the flag the run loop reads after the
// call). A plain clock_nanosleep then slept on: a host interrupt of a cell in time.sleep(30)
// waited for the cell's deadline, in about 1 of 20 runs of tests/vmm/agent_vm_test.py. So the io
// signal is blocked while signal_waiting() looks, and ppoll unblocks it atomically for the wait.
int64_t do_sleep(Guest& g, clockid_t clock, int flags, uint64_t req_p, uint64_t rem_p) {
  timespec req;
  if (!g.mem.read(req_p, &req)) return -EFAULT;
  if (req.tv_nsec < 0 || req.tv_nsec >= 1000000000 || req.tv_sec < 0) return -EINVAL;
  timespec now;
  clock_gettime(clock, &now);
  const int64_t end = (flags & TIMER_ABSTIME) ? ns_of(req) : ns_of(now) + ns_of(req);
  sigset_t io, old;
  sigemptyset(&io);
  sigaddset(&io, io_signal());
  pthread_sigmask(SIG_BLOCK, &io, &old);
  int rc = 0;
  if (signal_waiting(g)) {
    rc = EINTR;  // the run loop delivers it after this call
  } else {
    for (;;) {
      clock_gettime(clock, &now);
      if (ns_of(now) >= end) break;
      timespec left = ts_of(end - ns_of(now));
      if (ppoll(nullptr, 0, &left, &old) < 0) {
        rc = EINTR;  // a signal; any other failure (ENOMEM) too: the guest sleeps on with `rem`
        break;
      }
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (rc == EINTR && rem_p && !(flags & TIMER_ABSTIME)) {
    clock_gettime(clock, &now);
    g.mem.write(rem_p, ts_of(end > ns_of(now) ? end - ns_of(now) : 0));
  }
  return -rc;
}

int64_t sys_nanosleep(Guest& g, const SyscallArgs& a) { return do_sleep(g, CLOCK_MONOTONIC, 0, a.a[0], a.a[1]); }

int64_t sys_clock_nanosleep(Guest& g, const SyscallArgs& a) {
  if (a.a[0] != CLOCK_REALTIME && a.a[0] != CLOCK_MONOTONIC && a.a[0] != CLOCK_BOOTTIME) return -EINVAL;
  return do_sleep(g, static_cast<clockid_t>(a.a[0]), static_cast<int>(a.a[1] & TIMER_ABSTIME), a.a[2], a.a[3]);
}

int64_t sys_getrandom(Guest& g, const SyscallArgs& a) {
  uint64_t len = a.a[1] > 33554431 ? 33554431 : a.a[1];
  uint8_t* p = g.mem.user_ptr(a.a[0], len);
  if (!p && len) return -EFAULT;
  return host_ret(getrandom(p, len, static_cast<unsigned>(a.a[2] & GRND_NONBLOCK)));
}

}  // namespace

void register_time_syscalls(SyscallTable& t) {
  t.add(35, "nanosleep", sys_nanosleep);
  t.add(96, "gettimeofday", sys_gettimeofday);
  t.add(201, "time", sys_time);
  t.add(228, "clock_gettime", sys_clock_gettime);
  t.add(229, "clock_getres", sys_clock_getres);
  t.add(230, "clock_nanosleep", sys_clock_nanosleep);
  t.add(318, "getrandom", sys_getrandom);
}

}  // namespace sp::vmm
