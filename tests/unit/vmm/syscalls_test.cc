// Syscall handlers driven with ordinary and hostile arguments, without a vCPU.
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test_guest.h"
#include "vmm/syscalls/signal.h"
#include "vmm/vm.h"

using namespace sp::vmm;
using sp::vmm::testing::TestGuest;

namespace {
constexpr uint64_t kSys = 0x1000;            // page tables: never a valid guest pointer
constexpr uint64_t kBeyond = 1ull << 40;      // past guest memory
}  // namespace

TEST_CASE("unknown syscalls answer ENOSYS and are counted") {
  TestGuest t;
  uint64_t before = global_counters().unknown_syscalls.load();
  CHECK(t.call(400) == -ENOSYS);
  CHECK(t.call(511) == -ENOSYS);
  CHECK(t.call(512) == -ENOSYS);
  CHECK(t.call(~0ull) == -ENOSYS);
  CHECK(t.call(41 /* socket */) == -ENOSYS);
  CHECK(t.g.unknown_syscalls == 5);
  CHECK(global_counters().unknown_syscalls.load() - before == 5);
  CHECK(t.call(57 /* fork */) == -ENOSYS);
  CHECK(t.g.unknown_syscalls == 5);  // refused, not unknown
}

TEST_CASE("read/write: bad pointers and huge lengths fail with EFAULT; pipes work") {
  TestGuest t;
  int pfd[2];
  REQUIRE(t.pipe(pfd));
  uint64_t msg = t.str("hello", 64);
  CHECK(t.call(1, pfd[1], kSys, 5) == -EFAULT);
  CHECK(t.call(1, pfd[1], kBeyond, 5) == -EFAULT);
  CHECK(t.call(1, pfd[1], msg, ~0ull) == -EFAULT);
  CHECK(t.call(1, pfd[1], t.g.mem.size() - 2, 4) == -EFAULT);
  CHECK(t.call(1, pfd[1], msg, 5) == 5);
  CHECK(t.call(0, pfd[0], kSys, 5) == -EFAULT);
  uint64_t buf = TestGuest::kScratch + 256;
  CHECK(t.call(0, pfd[0], buf, 5) == 5);
  char got[6] = {};
  t.g.mem.copy_in(got, buf, 5);
  CHECK(std::string(got) == "hello");
  CHECK(t.call(0, 999, buf, 1) == -EBADF);
  CHECK(t.call(0, -1ull, buf, 1) == -EBADF);
}

TEST_CASE("readv/writev check every iovec") {
  TestGuest t;
  int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  REQUIRE(t.g.fds.install_at(5, sp::UniqueFd(null_fd)).ok());
  uint64_t iov = TestGuest::kScratch + 512;
  uint64_t good[4] = {TestGuest::kScratch, 8, kSys, 8};
  t.g.mem.copy_out(iov, good, sizeof good);
  CHECK(t.call(20, 5, iov, 1) == 8);
  CHECK(t.call(20, 5, iov, 2) == -EFAULT);
  CHECK(t.call(20, 5, kSys, 1) == -EFAULT);
  CHECK(t.call(20, 5, iov, 1ull << 40) == -EINVAL);
  CHECK(t.call(19, 5, t.g.mem.size() - 8, 1) == -EFAULT);
}

TEST_CASE("opens cannot reach /proc magic links, procfs or devices outside the allowlist") {
  TestGuest t;
  CHECK(t.call(257, AT_FDCWD, t.str("/proc/self/mem"), O_RDWR) < 0);
  CHECK(t.call(257, AT_FDCWD, t.str("/proc/self/fd/0"), O_RDONLY) < 0);
  CHECK(t.call(257, AT_FDCWD, t.str("/proc/self/status"), O_RDONLY) == -EACCES);
  CHECK(t.call(257, AT_FDCWD, t.str("/dev/kvm"), O_RDWR) == -EACCES);
  CHECK(t.call(257, AT_FDCWD, kSys, O_RDONLY) == -EFAULT);
  CHECK(t.call(257, 77, t.str("relative"), O_RDONLY) == -EBADF);
  int64_t fd = t.call(257, AT_FDCWD, t.str("/dev/null"), O_RDONLY);
  CHECK(fd >= 0);
  CHECK(t.call(3, fd) == 0);
  CHECK(t.call(3, fd) == -EBADF);
  CHECK(t.call(80 /* chdir */, t.str("/proc")) == -EACCES);
  uint64_t out = TestGuest::kScratch + 1024;
  CHECK(t.call(89 /* readlink */, t.str("/proc/self/exe"), out, 100) == 16);
  CHECK(t.call(89, t.str("/proc/self/fd/0"), out, 100) == -EACCES);
  CHECK(t.call(89, t.str("/proc/self/exe"), kSys, 100) == -EFAULT);
}

TEST_CASE("file-backed private mmap copies the file; writable shared file mmap is refused") {
  TestGuest t;
  int64_t fd = t.call(257, AT_FDCWD, t.str("/bin/busybox"), O_RDONLY);
  REQUIRE(fd >= 0);
  int64_t addr = t.call(9, 0, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
  REQUIRE(addr > 0);
  CHECK(static_cast<uint64_t>(addr) >= TestGuest::kLow);
  uint32_t magic = 0;
  CHECK(t.g.mem.read(addr, &magic));
  CHECK(std::memcmp(&magic, "\177ELF", 4) == 0);
  CHECK(t.call(9, 0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == -ENODEV);
  CHECK(t.call(9, 0, 4096, PROT_READ, MAP_PRIVATE, fd, 1) == -EINVAL);
  CHECK(t.call(9, 0, 4096, PROT_READ, MAP_PRIVATE, 999, 0) == -EBADF);
}

TEST_CASE("anonymous mmap, MAP_FIXED, munmap, mremap, madvise keep the zero invariant") {
  TestGuest t;
  int64_t a = t.call(9, 0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(a > 0);
  CHECK(static_cast<uint64_t>(a) + 3 * 4096 <= TestGuest::kHigh);
  CHECK(t.g.mem.write<uint64_t>(a, 42));
  CHECK(t.call(9, a, 4096, 3, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == -EEXIST);
  CHECK(t.call(9, a, 4096, 3, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == a);
  uint64_t v = 1;
  CHECK(t.g.mem.read(a, &v));
  CHECK(v == 0);  // MAP_FIXED over a mapping gives fresh zero pages
  CHECK(t.g.mem.write<uint64_t>(a + 4096, 7));
  int64_t b = t.call(25 /* mremap */, a, 3 * 4096, 64 * 4096, MREMAP_MAYMOVE);
  REQUIRE(b > 0);
  CHECK(t.g.mem.read(b + 4096, &v));
  CHECK(v == 7);
  CHECK(t.call(28 /* madvise */, b, 2 * 4096, MADV_DONTNEED) == 0);
  CHECK(t.g.mem.read(b + 4096, &v));
  CHECK(v == 0);
  CHECK(t.call(11, b, 64 * 4096) == 0);
  CHECK(t.g.as.is_free(b, 64 * 4096));
  // Hostile arguments.
  CHECK(t.call(9, kSys, 4096, 3, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == -ENOMEM);
  CHECK(t.call(9, 0, 1ull << 62, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == -EINVAL);
  CHECK(t.call(9, 0, 0, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == -EINVAL);
  CHECK(t.call(9, 0, 1ull << 30, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == -EINVAL);
  CHECK(t.call(9, 0, 48ull << 20, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == -ENOMEM);
  CHECK(t.call(11, 0, 4096) == -EINVAL);
  CHECK(t.call(11, TestGuest::kLow + 1, 4096) == -EINVAL);
  CHECK(t.call(25, kSys, 4096, 8192, MREMAP_MAYMOVE) == -EFAULT);
  CHECK(t.call(25, TestGuest::kLow, 4096, 8192, MREMAP_MAYMOVE) == -EFAULT);  // not mapped
  CHECK(t.call(10 /* mprotect */, kSys, 4096, PROT_READ) == -ENOMEM);
}

TEST_CASE("brk grows, shrinks (zeroing) and refuses the system area") {
  TestGuest t;
  CHECK(t.call(12, 0) == static_cast<int64_t>(TestGuest::kBrk));
  CHECK(t.call(12, kSys) == static_cast<int64_t>(TestGuest::kBrk));
  CHECK(t.call(12, TestGuest::kBrk + 10000) == static_cast<int64_t>(TestGuest::kBrk + 10000));
  CHECK(t.g.mem.write<uint64_t>(TestGuest::kBrk + 8192, 5));
  CHECK(t.call(12, TestGuest::kBrk + 100) == static_cast<int64_t>(TestGuest::kBrk + 100));
  CHECK(t.call(12, TestGuest::kBrk + 10000) == static_cast<int64_t>(TestGuest::kBrk + 10000));
  uint64_t v = 1;
  CHECK(t.g.mem.read(TestGuest::kBrk + 8192, &v));
  CHECK(v == 0);
  CHECK(t.call(12, kBeyond) == static_cast<int64_t>(TestGuest::kBrk + 10000));
}

TEST_CASE("poll, futex and time with hostile arguments") {
  TestGuest t;
  CHECK(t.call(7, kSys, 1, 0) == -EFAULT);
  CHECK(t.call(7, TestGuest::kScratch, 1ull << 40, 0) == -EINVAL);
  uint64_t fds = t.str("");
  REQUIRE(t.call(293, fds, 0) == 0);
  int pfd[2] = {-1, -1};
  t.g.mem.copy_in(pfd, fds, 8);
  pollfd p[2] = {{pfd[0], POLLIN, 0}, {9999, POLLIN, 0}};
  uint64_t pp = TestGuest::kScratch + 2048;
  t.g.mem.copy_out(pp, p, sizeof p);
  CHECK(t.call(7, pp, 2, 0) == 1);  // only the invalid fd reports (POLLNVAL)
  t.g.mem.copy_in(p, pp, sizeof p);
  CHECK(p[1].revents == POLLNVAL);
  CHECK(t.call(1, pfd[1], t.str("x", 3000), 1) == 1);
  CHECK(t.call(7, pp, 1, 0) == 1);
  CHECK(t.call(202, kSys, FUTEX_WAIT, 0, 0) == -EFAULT);
  CHECK(t.call(202, TestGuest::kScratch + 1, FUTEX_WAIT, 0, 0) == -EINVAL);
  t.g.mem.write<uint32_t>(TestGuest::kScratch + 4000, 3);
  CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAIT, 4, 0) == -EAGAIN);
  timespec ts{0, 1000};
  t.g.mem.write(TestGuest::kScratch + 4008, ts);
  CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAIT, 3, TestGuest::kScratch + 4008) == -ETIMEDOUT);
  CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAKE, 1) == 0);
  // Linux's EINVALs, before the value is compared: invalid timeouts, an empty bitset.
  for (timespec bad : {timespec{-1, 0}, timespec{0, -1}, timespec{0, 1000000000}}) {
    REQUIRE(t.g.mem.write(TestGuest::kScratch + 4008, bad));
    CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAIT, 3, TestGuest::kScratch + 4008) == -EINVAL);
    CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAIT, 4, TestGuest::kScratch + 4008) == -EINVAL);
    CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAIT_BITSET, 3, TestGuest::kScratch + 4008, 0, ~0u) == -EINVAL);
  }
  CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAIT_BITSET, 3, 0, 0, 0) == -EINVAL);
  CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAKE_BITSET, 1, 0, 0, 0) == -EINVAL);
  CHECK(t.call(202, TestGuest::kScratch + 4000, FUTEX_WAKE_BITSET, 1, 0, 0, 1) == 0);
  CHECK(t.call(228, 0, kSys) == -EFAULT);
  CHECK(t.call(228, 99, TestGuest::kScratch) == -EINVAL);
  CHECK(t.call(228, 1, TestGuest::kScratch) == 0);
  CHECK(t.call(318, t.g.mem.size() - 16, 1ull << 40, 0) == -EFAULT);
  CHECK(t.call(318, TestGuest::kScratch, 16, 0) == 16);
}

TEST_CASE("sleeps: a signal already waiting for the guest makes them return EINTR at once; huge ones do not overflow") {
  TestGuest t;
  const uint64_t req = TestGuest::kScratch + 512, rem = TestGuest::kScratch + 768;
  REQUIRE(t.g.mem.write(req, timespec{30, 0}));
  auto timed = [&](auto&& call) {
    timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int64_t r = call();
    clock_gettime(CLOCK_MONOTONIC, &b);
    return std::pair<int64_t, double>(r, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
  };
  // A signal that stopped the guest as it entered the syscall waits, pending, until after it:
  // the 30 s sleep must not start (it once did, and a host interrupt waited for the cell's deadline).
  t.g.sig.pending = 1ull << (SIGINT - 1);
  auto [r1, s1] = timed([&] { return t.call(35 /* nanosleep */, req, rem); });
  CHECK(r1 == -EINTR);
  CHECK(s1 < 5);
  timespec left{};
  REQUIRE(t.g.mem.read(rem, &left));
  CHECK(left.tv_sec >= 25);  // what was left of the 30 s
  auto [r2, s2] = timed([&] { return t.call(230 /* clock_nanosleep */, CLOCK_MONOTONIC, 0, req, rem); });
  CHECK(r2 == -EINTR);
  CHECK(s2 < 5);
  // Blocked, it waits: the sleep runs (a short one here).
  t.g.sig.blocked = 1ull << (SIGINT - 1);
  REQUIRE(t.g.mem.write(req, timespec{0, 2000000}));
  auto [r3, s3] = timed([&] { return t.call(35, req, 0); });
  CHECK(r3 == 0);
  CHECK(s3 >= 0.002);
  // An absolute time in the past returns at once; a huge request is refused by nothing but the
  // pending signal (no overflow on the way).
  t.g.sig.pending = t.g.sig.blocked = 0;
  REQUIRE(t.g.mem.write(req, timespec{1, 0}));
  CHECK(t.call(230, CLOCK_MONOTONIC, TIMER_ABSTIME, req, 0) == 0);
  REQUIRE(t.g.mem.write(req, timespec{INT64_MAX, 999999999}));
  t.g.sig.pending = 1ull << (SIGIO - 1);
  CHECK(t.call(35, req, rem) == -EINTR);
  CHECK(t.call(230, CLOCK_REALTIME, TIMER_ABSTIME, req, 0) == -EINTR);
}

TEST_CASE("blocking calls: a signal waiting for the guest ends them with EINTR at once, unless something is ready") {
  TestGuest t;
  int pfd[2];
  REQUIRE(t.pipe(pfd));
  const uint64_t buf = TestGuest::kScratch + 64, ts = TestGuest::kScratch + 256, fds = TestGuest::kScratch + 512,
                 set = TestGuest::kScratch + 768, ev = TestGuest::kScratch + 1024, iov = TestGuest::kScratch + 1536;
  REQUIRE(t.g.mem.write(ts, timespec{30, 0}));
  const int64_t ep = t.call(291 /* epoll_create1 */, 0);
  REQUIRE(ep >= 0);
  uint32_t in = 1;  // EPOLLIN, then the packed data word
  REQUIRE(t.g.mem.copy_out(ev, &in, 4));
  REQUIRE(t.call(233 /* epoll_ctl */, ep, 1 /* ADD */, pfd[0], ev) == 0);
  const uint64_t vec[2] = {buf, 16};
  REQUIRE(t.g.mem.copy_out(iov, vec, sizeof vec));
  auto pollfd_in = [&] {
    pollfd p{pfd[0], POLLIN, 0};
    REQUIRE(t.g.mem.copy_out(fds, &p, sizeof p));
  };
  auto read_set = [&] {
    uint64_t bits = 1ull << pfd[0];
    REQUIRE(t.g.mem.copy_out(set, &bits, 8));
  };
  uint32_t word = 7;
  REQUIRE(t.g.mem.write(TestGuest::kScratch + 1200, word));
  // Each of these would wait 30 s or for ever on the empty pipe; timed as a whole.
  auto every_call = [&] {
    std::vector<int64_t> r;
    pollfd_in();
    r.push_back(t.call(7 /* poll */, fds, 1, 30000));
    pollfd_in();
    r.push_back(t.call(271 /* ppoll */, fds, 1, 0, 0, 8));
    read_set();
    r.push_back(t.call(23 /* select */, pfd[0] + 1, set, 0, 0, 0));
    read_set();
    r.push_back(t.call(270 /* pselect6 */, pfd[0] + 1, set, 0, 0, ts, 0));
    r.push_back(t.call(232 /* epoll_wait */, ep, ev, 1, -1));
    r.push_back(t.call(281 /* epoll_pwait */, ep, ev, 1, 30000, 0, 8));
    r.push_back(t.call(34 /* pause */));
    r.push_back(t.call(202 /* futex */, TestGuest::kScratch + 1200, FUTEX_WAIT, 7, ts));
    r.push_back(t.call(202, TestGuest::kScratch + 1200, FUTEX_WAIT, 7, 0));
    r.push_back(t.call(0 /* read */, pfd[0], buf, 16));
    r.push_back(t.call(19 /* readv */, pfd[0], iov, 1));
    return r;
  };
  auto seconds = [](const timespec& a, const timespec& b) { return (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9; };
  timespec a, b;
  // A signal that stopped the guest as it entered the call is pending until after it.
  t.g.sig.pending = 1ull << (SIGINT - 1);
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int64_t r : every_call()) CHECK(r == -EINTR);
  // The host's interrupt or kill, requested but not yet seen by the run loop, counts the same.
  t.g.sig.pending = 0;
  std::atomic<bool> interrupt{true}, kill{false};
  t.g.host_interrupt = &interrupt;
  t.g.host_kill = &kill;
  for (int64_t r : every_call()) CHECK(r == -EINTR);
  interrupt = false;
  kill = true;
  for (int64_t r : every_call()) CHECK(r == -EINTR);
  clock_gettime(CLOCK_MONOTONIC, &b);
  CHECK(seconds(a, b) < 5);
  kill = false;
  // An interrupt the guest blocks (SIGINT) does not end a wait: the futex times out.
  interrupt = true;
  t.g.sig.blocked = 1ull << (SIGINT - 1);
  REQUIRE(t.g.mem.write(ts, timespec{0, 20000000}));
  clock_gettime(CLOCK_MONOTONIC, &a);
  CHECK(t.call(202, TestGuest::kScratch + 1200, FUTEX_WAIT, 7, ts) == -ETIMEDOUT);
  clock_gettime(CLOCK_MONOTONIC, &b);
  CHECK(seconds(a, b) >= 0.02);
  t.g.sig.blocked = 0;
  // What is ready is reported, as Linux does: no EINTR then; and a call that does not wait
  // (timeout 0, a non-blocking read) never answers EINTR.
  REQUIRE(t.g.mem.copy_out(buf, "hello", 5));
  REQUIRE(t.call(1 /* write */, pfd[1], buf, 5) == 5);
  pollfd_in();
  CHECK(t.call(7, fds, 1, 30000) == 1);
  CHECK(t.call(232, ep, ev, 1, -1) == 1);
  CHECK(t.call(0, pfd[0], buf, 16) == 5);
  pollfd_in();
  CHECK(t.call(7, fds, 1, 0) == 0);
  CHECK(t.call(232, ep, ev, 1, 0) == 0);
  REQUIRE(t.call(72 /* fcntl */, pfd[0], F_SETFL, O_NONBLOCK) == 0);
  CHECK(t.call(0, pfd[0], buf, 16) == -EAGAIN);
  // Writes to a full pipe wait the same way.
  REQUIRE(t.call(72, pfd[1], F_SETFL, O_NONBLOCK) == 0);
  while (t.call(1, pfd[1], buf, 16) == 16) {
  }
  CHECK(t.call(1, pfd[1], buf, 16) == -EAGAIN);  // not blocking: never EINTR
  REQUIRE(t.call(72, pfd[1], F_SETFL, 0) == 0);
  t.g.sig.pending = 1ull << (SIGIO - 1);
  CHECK(t.call(1 /* write */, pfd[1], buf, 16) == -EINTR);
  CHECK(t.call(20 /* writev */, pfd[1], iov, 1) == -EINTR);
  t.g.sig.pending = 0;
  t.g.host_interrupt = t.g.host_kill = nullptr;
}

TEST_CASE("blocking calls: the host's kick during the wait ends it with EINTR") {
  install_process_signals();  // the kick's no-op handler (its default action would end the process)
  TestGuest t;
  int pfd[2];
  REQUIRE(t.pipe(pfd));
  const int write_end = t.g.fds.host(pfd[1]);
  const uint64_t buf = TestGuest::kScratch + 64, ts = TestGuest::kScratch + 256;
  REQUIRE(t.g.mem.write(ts, timespec{30, 0}));
  const pthread_t self = pthread_self();
  auto kicked = [&](auto&& call) {
    std::atomic<bool> done{false};
    std::thread kicker([&] {
      usleep(50000);
      pthread_kill(self, kick_signal_number());
      for (int i = 0; i < 300 && !done; ++i) usleep(10000);
      if (!done) (void)!write(write_end, "x", 1);  // a wait the kick missed ends here, failing the check
    });
    int64_t r = call();
    done = true;
    kicker.join();
    return r;
  };
  CHECK(kicked([&] { return t.call(0 /* read */, pfd[0], buf, 16); }) == -EINTR);
  CHECK(kicked([&] { return t.call(35 /* nanosleep */, ts, 0); }) == -EINTR);
  pollfd p{pfd[0], POLLIN, 0};
  REQUIRE(t.g.mem.copy_out(buf, &p, sizeof p));
  CHECK(kicked([&] { return t.call(7 /* poll */, buf, 1, -1); }) == -EINTR);
}

TEST_CASE("blocking calls: a socket's receive and send timeouts still bound the wait") {
  TestGuest t;
  const uint64_t sv = TestGuest::kScratch + 64, tv = TestGuest::kScratch + 128, buf = TestGuest::kScratch + 256;
  REQUIRE(t.call(53 /* socketpair */, AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  int fds[2];
  REQUIRE(t.g.mem.copy_in(fds, sv, sizeof fds));
  const int peer = t.g.fds.host(fds[1]);
  const timeval limit{0, 50000};
  REQUIRE(t.g.mem.copy_out(tv, &limit, sizeof limit));
  REQUIRE(t.call(54 /* setsockopt */, fds[0], SOL_SOCKET, SO_RCVTIMEO_OLD, tv, sizeof limit) == 0);
  REQUIRE(t.call(54, fds[0], SOL_SOCKET, SO_SNDTIMEO_OLD, tv, sizeof limit) == 0);
  // A wait that ignored the timeout would last until this thread's write, 3 s on (then fail).
  std::atomic<bool> done{false};
  std::thread rescue([&] {
    for (int i = 0; i < 300 && !done; ++i) usleep(10000);
    if (!done) (void)!write(peer, "x", 1);
  });
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  CHECK(t.call(0 /* read */, fds[0], buf, 16) == -EAGAIN);
  CHECK(t.call(45 /* recvfrom */, fds[0], buf, 16, 0, 0, 0) == -EAGAIN);
  // Fill the socket's send buffer (non-blocking), then a blocking send times out too.
  REQUIRE(t.call(72 /* fcntl */, fds[0], F_SETFL, O_NONBLOCK) == 0);
  while (t.call(1, fds[0], buf, 16) == 16) {
  }
  REQUIRE(t.call(72, fds[0], F_SETFL, 0) == 0);
  CHECK(t.call(1 /* write */, fds[0], buf, 16) == -EAGAIN);
  clock_gettime(CLOCK_MONOTONIC, &b);
  done = true;
  rescue.join();
  CHECK((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < 2);
}

TEST_CASE("ppoll and pselect6 refuse invalid timeouts at once; huge timeouts do not overflow") {
  TestGuest t;
  int pfd[2];
  REQUIRE(t.pipe(pfd));
  const uint64_t ts = TestGuest::kScratch + 256, pp = TestGuest::kScratch + 512, set = TestGuest::kScratch + 768;
  // Linux answers EINVAL. These were taken as no wait or a one-second wait, or (negative) as poll's
  // "forever" (found by tests/fuzz/vmm_syscalls_fuzz.cc).
  for (timespec bad : {timespec{0, -1}, timespec{0, 1000000000}, timespec{0, INT64_MAX}, timespec{INT64_MIN, 0},
                       timespec{-1, 0}}) {
    REQUIRE(t.g.mem.write(ts, bad));
    CHECK(t.call(271 /* ppoll */, 0, 0, ts, 0, 8) == -EINVAL);
    CHECK(t.call(270 /* pselect6 */, 0, 0, 0, 0, ts, 0) == -EINVAL);
  }
  // A ready descriptor ends any wait at once: these check only the conversion of timeouts Linux
  // takes (tv_sec * 1000 and select's tv_usec * 1000 overflowed, which UBSan reports).
  REQUIRE(t.call(1, pfd[1], t.str("x", 64), 1) == 1);
  REQUIRE(t.g.mem.write(pp, pollfd{pfd[0], POLLIN, 0}));
  REQUIRE(t.g.mem.write(ts, timespec{INT64_MAX, 999999999}));
  CHECK(t.call(271, pp, 1, ts, 0, 8) == 1);
  const uint64_t bits = 1ull << pfd[0];
  REQUIRE(t.g.mem.write(set, bits));
  CHECK(t.call(270, pfd[0] + 1, set, 0, 0, ts, 0) == 1);
  const int64_t tv[2] = {INT64_MAX, INT64_MAX};
  REQUIRE(t.g.mem.copy_out(ts, tv, sizeof tv));
  REQUIRE(t.g.mem.write(set, bits));
  CHECK(t.call(23 /* select */, pfd[0] + 1, set, 0, 0, ts) == 1);
}

TEST_CASE("process calls: arch_prctl, prlimit64, uname, rseq") {
  TestGuest t;
  CHECK(t.call(158, 0x1002 /* ARCH_SET_FS */, 1ull << 50) == -EPERM);
  CHECK(t.call(158, 0x1002, 0x123000) == 0);
  CHECK(t.run.s.regs.sregs.fs.base == 0x123000);
  CHECK((t.run.kvm_dirty_regs & KVM_SYNC_X86_SREGS) != 0);
  CHECK(t.call(158, 0x1003, kSys) == -EFAULT);
  CHECK(t.call(158, 0x9999, 0) == -EINVAL);
  CHECK(t.call(302, 0, 7 /* NOFILE */, 0, kSys) == -EFAULT);
  CHECK(t.call(302, 0, 7, 0, TestGuest::kScratch) == 0);
  uint64_t lim[2];
  t.g.mem.copy_in(lim, TestGuest::kScratch, 16);
  CHECK(lim[0] == FdTable::kMaxFds);
  CHECK(t.call(302, 12345, 7, 0, TestGuest::kScratch) == -ESRCH);
  CHECK(t.call(63, kSys) == -EFAULT);
  CHECK(t.call(63, TestGuest::kScratch) == 0);
  CHECK(t.call(334 /* rseq */, TestGuest::kScratch + 3, 32, 0, 0) == -EINVAL);
  CHECK(t.call(334, kSys, 32, 0, 0) == -EFAULT);
  CHECK(t.call(231, 3) == 0);
  CHECK(t.g.exited);
  CHECK(t.g.exit_code == 3);
}

TEST_CASE("socket options and names on a given socket, with hostile lengths") {
  TestGuest t;
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  REQUIRE(t.g.fds.install_at(3, sp::UniqueFd(sv[0])).ok());
  sp::UniqueFd other(sv[1]);
  uint64_t val = TestGuest::kScratch + 100, len = TestGuest::kScratch + 200;
  t.g.mem.write<uint32_t>(len, 4);
  CHECK(t.call(55, 3, SOL_SOCKET, SO_TYPE, val, len) == 0);
  uint32_t type = 0;
  t.g.mem.read(val, &type);
  CHECK(type == SOCK_STREAM);
  CHECK(t.call(55, 3, SOL_SOCKET, SO_TYPE, val, kSys) == -EFAULT);
  CHECK(t.call(55, 3, SOL_SOCKET, SO_TYPE, kSys, len) == -EFAULT);
  t.g.mem.write<uint32_t>(len, 0xffffffffu);  // clamped, then checked
  CHECK(t.call(55, 3, SOL_SOCKET, SO_TYPE, t.g.mem.size() - 8, len) == -EFAULT);
  CHECK(t.call(55, 3, SOL_SOCKET, SO_PEERCRED, val, len) == -ENOPROTOOPT);
  CHECK(t.call(54, 3, SOL_SOCKET, SO_RCVBUF, val, 1ull << 40) == -EINVAL);
  t.g.mem.write<uint32_t>(len, 128);
  CHECK(t.call(51, 3, val, len) == 0);
  CHECK(t.call(52, 3, kSys, len) == -EFAULT);
  CHECK(t.call(55, 9, SOL_SOCKET, SO_TYPE, val, len) == -EBADF);
  CHECK(t.call(41 /* socket */, AF_INET, SOCK_STREAM, 0) == -ENOSYS);
}

TEST_CASE("epoll, eventfd and socketpair with hostile arguments") {
  TestGuest t;
  int64_t ep = t.call(291, 0);
  REQUIRE(ep >= 0);
  int64_t efd = t.call(290, 0, 0);
  REQUIRE(efd >= 0);
  uint64_t ev = TestGuest::kScratch + 300;
  uint32_t events = 1;  // EPOLLIN, data follows (packed)
  uint64_t data = 0xfeedull;
  t.g.mem.copy_out(ev, &events, 4);
  t.g.mem.copy_out(ev + 4, &data, 8);
  CHECK(t.call(233, ep, 1 /* ADD */, efd, kSys) == -EFAULT);
  CHECK(t.call(233, ep, 1, 999, ev) == -EBADF);
  CHECK(t.call(233, ep, 1, efd, ev) == 0);
  uint64_t one = 1;
  t.g.mem.write(TestGuest::kScratch + 400, one);
  CHECK(t.call(1, efd, TestGuest::kScratch + 400, 8) == 8);
  uint64_t out = TestGuest::kScratch + 512;
  CHECK(t.call(232, ep, out, 1ull << 40, 0) == -EINVAL);
  CHECK(t.call(232, ep, t.g.mem.size() - 12, 4, 0) == -EFAULT);
  CHECK(t.call(232, ep, out, 4, 0) == 1);
  uint64_t got = 0;
  t.g.mem.copy_in(&got, out + 4, 8);
  CHECK(got == 0xfeed);  // the guest's own data word comes back
  CHECK(t.call(53, AF_INET, SOCK_STREAM, 0, TestGuest::kScratch) == -EAFNOSUPPORT);
  CHECK(t.call(53, AF_UNIX, SOCK_STREAM, 0, kSys) == -EFAULT);
  CHECK(t.call(53, AF_UNIX, SOCK_STREAM, 0, TestGuest::kScratch) == 0);
}

TEST_CASE("fcntl O_ASYNC and owner with hostile arguments") {
  TestGuest t;
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  REQUIRE(t.g.fds.install_at(3, sp::UniqueFd(sv[0])).ok());
  sp::UniqueFd other(sv[1]);
  CHECK(t.call(72, 3, F_SETOWN_EX, kSys) == -EFAULT);
  CHECK(t.call(72, 3, F_GETOWN_EX, kSys) == -EFAULT);
  CHECK(t.call(72, 3, F_SETOWN, 7) == 0);
  CHECK(t.call(72, 3, F_GETOWN) == 7);
  int64_t fl = t.call(72, 3, F_GETFL);
  REQUIRE(fl >= 0);
  CHECK(t.call(72, 3, F_SETFL, fl | O_ASYNC) == 0);
  CHECK((t.call(72, 3, F_GETFL) & O_ASYNC) != 0);
  CHECK(t.g.async_fds.size() == 1);
  CHECK(t.call(72, 3, F_SETFL, fl) == 0);
  CHECK(t.g.async_fds.empty());
  CHECK(t.call(72, 3, F_SETFL, fl | O_ASYNC) == 0);
  CHECK(t.call(3, 3) == 0);
  CHECK(t.g.async_fds.empty());
  CHECK(t.call(72, 3, F_SETFL, O_ASYNC) == -EBADF);
}

TEST_CASE("close_range forgets the O_ASYNC descriptors it closes, as close does") {
  // Found by tests/fuzz/vmm_syscalls_fuzz.cc: the entry stayed, and run() re-owned whatever
  // descriptor later took that number.
  TestGuest t;
  int pfd[2];
  REQUIRE(t.pipe(pfd));
  REQUIRE(t.call(72, pfd[0], F_SETFL, O_ASYNC) == 0);
  REQUIRE(t.g.async_fds.size() == 1);
  CHECK(t.call(436 /* close_range */, pfd[0], pfd[0], 0) == 0);
  CHECK(t.g.fds.host(pfd[0]) < 0);
  CHECK(t.g.async_fds.empty());
}

TEST_CASE("a dup of an O_ASYNC descriptor is listed too; a dup2 over one forgets it") {
  // O_ASYNC belongs to the open file, which dups share: with only the original listed, closing
  // it left the dup signalling with nothing listed (no SIGIO injected), and a dup2 over a listed
  // number kept a stale entry (found by the syscall fuzz target's author).
  TestGuest t;
  int pfd[2];
  REQUIRE(t.pipe(pfd));
  REQUIRE(t.call(72, pfd[0], F_SETFL, O_ASYNC) == 0);
  const int64_t d = t.call(32 /* dup */, pfd[0]);
  REQUIRE(d >= 0);
  const int64_t f = t.call(72, pfd[0], F_DUPFD, 20);
  REQUIRE(f >= 20);
  CHECK(t.g.async_fds.size() == 3);
  CHECK(t.call(3, pfd[0]) == 0);
  CHECK(t.g.async_fds.size() == 2);  // the dups still signal
  CHECK((t.call(72, d, F_GETFL) & O_ASYNC) != 0);
  CHECK(t.call(33 /* dup2 */, pfd[1], d) == d);  // d now names the write end, not async
  CHECK(t.g.async_fds.size() == 1);
  CHECK(t.call(292 /* dup3 */, f, 40, 0) == 40);
  CHECK(t.g.async_fds.size() == 2);
  CHECK(t.call(33, pfd[1], 40) == 40);
  CHECK(t.call(3, f) == 0);
  CHECK(t.g.async_fds.empty());
}

TEST_CASE("close_range: flags and bounds as Linux; CLOEXEC closes nothing") {
  TestGuest t;
  int pfd[2];
  REQUIRE(t.pipe(pfd));
  CHECK(t.call(436, pfd[0], ~0u, 4 /* CLOSE_RANGE_CLOEXEC */) == 0);
  CHECK(t.g.fds.host(pfd[0]) >= 0);
  CHECK(t.g.fds.host(pfd[1]) >= 0);
  CHECK(t.call(436, pfd[1], pfd[0], 0) == -EINVAL);  // first > last
  CHECK(t.call(436, pfd[0], pfd[1], 1) == -EINVAL);  // an unknown flag
  CHECK(t.g.fds.host(pfd[0]) >= 0);
  CHECK(t.call(436, pfd[0], 0xffffffffull | (1ull << 32), 2 /* CLOSE_RANGE_UNSHARE */) == 0);  // unsigned int
  CHECK(t.g.fds.host(pfd[0]) < 0);
  CHECK(t.g.fds.host(pfd[1]) < 0);
}

TEST_CASE("sandpool batch: runs allowed calls in order, stops at the first failure, checks every pointer") {
  TestGuest t;
  int pfd[2];
  REQUIRE(t.pipe(pfd));
  int mem = memfd_create("batch", MFD_CLOEXEC);
  REQUIRE(t.g.fds.install_at(7, sp::UniqueFd(mem)).ok());
  const uint64_t rec = TestGuest::kScratch + 4096, buf = TestGuest::kScratch + 8192;
  const uint64_t msg = t.str("abcdef", 64);
  auto put = [&](std::initializer_list<BatchEntry> es) {
    uint64_t at = rec;
    for (BatchEntry e : es) {
      e.ret = 12345;
      REQUIRE(t.g.mem.copy_out(at, &e, sizeof e));
      at += sizeof e;
    }
  };
  auto ret = [&](int i) {
    int64_t r = INT64_MIN;
    CHECK(t.g.mem.copy_in(&r, rec + i * sizeof(BatchEntry) + offsetof(BatchEntry, ret), sizeof r));
    return r;
  };
  // write, lseek, pread, fcntl, poll(0) in one call; the counters see one exit.
  uint64_t pollfd_at = buf + 512;
  struct pollfd pf{pfd[0], POLLIN, 0};
  REQUIRE(t.g.mem.copy_out(pollfd_at, &pf, sizeof pf));
  REQUIRE(t.call(1, pfd[1], msg, 1) == 1);  // the pipe is readable
  uint64_t before = t.g.syscall_count;
  put({{1, {7, msg, 6}, 0},
       {8, {7, 0, SEEK_CUR}, 0},
       {17, {7, buf, 100, 2}, 0},
       {72, {static_cast<uint64_t>(pfd[0]), F_GETFL}, 0},
       {7, {pollfd_at, 1, 0}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 5, 0) == 5);
  CHECK(t.g.syscall_count - before == 1);
  CHECK(ret(0) == 6);
  CHECK(ret(1) == 6);
  CHECK(ret(2) == 4);
  char got[5] = {};
  t.g.mem.copy_in(got, buf, 4);
  CHECK(std::string(got) == "cdef");
  CHECK((ret(3) & O_ACCMODE) == O_RDONLY);
  CHECK(ret(4) == 1);
  // Stops after the first failure; later records are untouched.
  put({{8, {7, 0, SEEK_SET}, 0}, {1, {999, msg, 1}, 0}, {8, {7, 3, SEEK_SET}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 3, 0) == 2);
  CHECK(ret(0) == 0);
  CHECK(ret(1) == -EBADF);
  CHECK(ret(2) == 12345);
  // Each entry's pointers are checked like a single call's.
  put({{1, {7, kSys, 4}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 1, 0) == 1);
  CHECK(ret(0) == -EFAULT);
  put({{17, {7, kBeyond, 4, 0}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 1, 0) == 1);
  CHECK(ret(0) == -EFAULT);
  put({{7, {kSys, 1, 0}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 1, 0) == 1);
  CHECK(ret(0) == -EFAULT);
  // A short write stops the batch: the calls after it may depend on the whole having gone out.
  REQUIRE(fcntl(t.g.fds.host(pfd[1]), F_SETFL, O_NONBLOCK) == 0);
  const uint64_t big = TestGuest::kScratch + 65536, big_len = 200000;
  put({{1, {static_cast<uint64_t>(pfd[1]), big, big_len}, 0}, {8, {7, 0, SEEK_SET}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 2, 0) == 1);
  CHECK(ret(0) > 0);
  CHECK(ret(0) < static_cast<int64_t>(big_len));
  CHECK(ret(1) == 12345);
  // sendto then recvfrom on a connected socket: a reply and the wait for the next request.
  int sp[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
  REQUIRE(t.g.fds.install_at(9, sp::UniqueFd(sp[0])).ok());
  REQUIRE(write(sp[1], "req", 3) == 3);
  put({{44, {9, msg, 6, 0}, 0}, {45, {9, buf, 100, 0}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 2, 0) == 2);
  CHECK(ret(0) == 6);
  CHECK(ret(1) == 3);
  char reply[7] = {};
  CHECK(read(sp[1], reply, 6) == 6);
  CHECK(std::string(reply) == "abcdef");
  t.g.mem.copy_in(got, buf, 3);
  got[3] = 0;
  CHECK(std::string(got) == "req");
  put({{44, {9, kSys, 6, 0}, 0}, {45, {9, buf, 100, 0}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 2, 0) == 1);
  CHECK(ret(0) == -EFAULT);
  put({{45, {9, kBeyond, 100, MSG_DONTWAIT}, 0}});
  CHECK(t.call(kBatchSyscall, rec, 1, 0) == 1);
  CHECK(ret(0) == -EFAULT);
  close(sp[1]);
  // Only calls that leave registers and signals alone: no read, no blocking poll, no F_SETLKW,
  // no nested batch, no exit, no rt_sigreturn.
  for (BatchEntry e : {BatchEntry{0, {static_cast<uint64_t>(pfd[0]), buf, 1}, 0}, BatchEntry{7, {pollfd_at, 1, 1000}, 0},
                       BatchEntry{72, {7, F_SETLKW, buf}, 0}, BatchEntry{kBatchSyscall, {rec, 1, 0}, 0},
                       BatchEntry{60, {0}, 0}, BatchEntry{15, {0}, 0}, BatchEntry{~0ull, {0}, 0}}) {
    put({e});
    CHECK(t.call(kBatchSyscall, rec, 1, 0) == 1);
    CHECK(ret(0) == -EINVAL);
  }
  CHECK_FALSE(t.g.exited);
  // The call itself: count, flags, and the records' range.
  CHECK(t.call(kBatchSyscall, rec, 0, 0) == -EINVAL);
  CHECK(t.call(kBatchSyscall, rec, kBatchMax + 1, 0) == -EINVAL);
  CHECK(t.call(kBatchSyscall, rec, ~0ull, 0) == -EINVAL);
  CHECK(t.call(kBatchSyscall, rec, 1, 1) == -EINVAL);
  CHECK(t.call(kBatchSyscall, kSys, 1, 0) == -EFAULT);
  CHECK(t.call(kBatchSyscall, kBeyond, 1, 0) == -EFAULT);
  CHECK(t.call(kBatchSyscall, t.g.mem.size() - 64, 2, 0) == -EFAULT);
  CHECK(t.g.unknown_syscalls == 0);
}
