// Time and randomness syscalls: clock_gettime/getres, gettimeofday, time, nanosleep,
// clock_nanosleep, getrandom, all answered from the host's clocks and entropy.
#include <sys/random.h>
#include <sys/time.h>

#include <ctime>

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

// Sleeps on the host; a kick (SIGINT injection) or the guest's SIGIO interrupts it with EINTR,
// as a signal would, and so does a signal that already waits when the sleep begins (wait_until):
// a plain clock_nanosleep slept on, and a host interrupt of a cell in time.sleep(30) waited for
// the cell's deadline in about 1 of 20 runs of tests/vmm/agent_vm_test.py. An interrupted
// relative sleep writes what was left to `rem`.
int64_t do_sleep(Guest& g, clockid_t clock, int flags, uint64_t req_p, uint64_t rem_p) {
  timespec req;
  if (!g.mem.read(req_p, &req)) return -EFAULT;
  if (req.tv_nsec < 0 || req.tv_nsec >= 1000000000 || req.tv_sec < 0) return -EINVAL;
  timespec now;
  clock_gettime(clock, &now);
  const int64_t end = (flags & TIMER_ABSTIME) ? ns_of(req) : ns_of(now) + ns_of(req);
  int64_t rc = wait_until(g, clock, end);
  if (rc == -EINTR && rem_p && !(flags & TIMER_ABSTIME)) {
    clock_gettime(clock, &now);
    g.mem.write(rem_p, ts_of(end > ns_of(now) ? end - ns_of(now) : 0));
  }
  return rc;
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
