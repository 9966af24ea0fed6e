// Fuzz target for the micro-VM's syscall handlers (src/vmm/syscalls): each input is a short
// program of system calls run against a fresh TestGuest, as a hostile guest would make them; not a
// test of the vCPU, the trap path or the loader (tests/vmm does those with a real VM).
//
// An input is a sequence of operations, read until it ends or kMaxCalls calls have run:
//   0x00..0xdf  a call: kCalls[op % size], then 6 argument selectors, then for a call that waits one
//               byte choosing its timeout from kTimeouts (make_safe)
//   0xe0..0xef  poke bytes: offset (2 bytes, little-endian) into the scratch area, n (1 byte), n bytes
//   0xf0..0xfd  poke word: offset (2 bytes), then one argument selector whose value is stored (8 bytes)
//   0xfe, 0xff  a call by number: nr (2 bytes); a number outside kCalls picks kCalls[nr % size]
//               (the seed corpus uses this form, so that its files keep their meaning when kCalls grows)
// An argument selector is one byte b:
//   0x00..0x5f  kValues[b % size]: pointers at the edges of guest memory, lengths, flags
//   0x60..0x7f  kScratch + (b & 31) * 128: where pokes put the structures that calls read
//   0x80..0x9f  the (b & 31)-th open guest descriptor
//   0xa0..0xbf  the result of a recent call (b & 7 back) plus ((b >> 3) & 3) pages
//   0xc0..0xff  raw bytes from the input: 1, 2, 4 (sign-extended) or 8
//
// After every call the target checks what a handler must keep whatever the guest passes (check_*):
// the return value, the guest's bookkeeping (address space, brk, signals, descriptor table), that
// the system area (page tables, GDT, stubs) was never touched, and after each input that no host
// descriptor leaked. ASan sees writes outside guest memory.
//
// This runs as root on shared machines and in CI: see kCalls for why each call is safe to run here,
// and make_safe for the arguments the target rewrites so that no call can wait.
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "../unit/vmm/test_guest.h"
#include "vmm/syscalls/async_io.h"
#include "vmm/syscalls/signal.h"
#include "vmm/vm.h"

namespace {

using sp::vmm::SyscallArgs;
using sp::vmm::testing::TestGuest;

constexpr int kMaxCalls = 48;
constexpr uint64_t kGuestBytes = 64ull << 20;           // TestGuest's memory
constexpr uint64_t kScratchBytes = 1ull << 20;          // TestGuest maps [kScratch, +1 MiB)
constexpr uint64_t kPokeWindow = 64ull << 10;           // pokes land in the first 64 KiB of it
constexpr uint64_t kTimeoutSlot = TestGuest::kScratch + kScratchBytes - 64;  // for NULL timeouts
constexpr uint64_t kBatch = sp::vmm::kBatchSyscall;

// The calls a program may make, each read for what its handler does on the host. Calls that act on
// processes are not here even where the VMM only pretends (kill/tkill/tgkill queue to the guest
// itself, exit only sets a flag, clone/fork/exec/wait are refusals): a later change that forwards
// one of them to the host must not find a fuzzer running it as root. Nor is anything that names a
// host path (open, stat, unlink, rename, mkdir, chdir, readlink...), changes process-wide state the
// fuzzer depends on (umask, fchdir, setrlimit and prlimit64 with a new limit, setpgid/setsid/
// setuid), or can only wait (pause).
enum class Wait : uint8_t {
  kNone,
  kTimespec,  // `arg` points at a struct timespec; NULL is "forever"
  kTimeval,   // `arg` points at a struct timeval; NULL is "forever"
};
struct Call {
  uint16_t nr;
  Wait wait = Wait::kNone;
  uint8_t arg = 0;
};
constexpr Call kCalls[] = {
    // Memory: AddressSpace bookkeeping, copies and hole punches inside the guest's own memfd.
    {9}, {10}, {11}, {12}, {25}, {26}, {28}, {149}, {150},
    // Descriptor calls: they only reach the guest's fd table, which holds what the program made
    // (pipes, socketpairs, eventfds, epoll instances, their dups) and what the target gives it (a
    // sealed 64 KiB memfd and /dev/zero read-only); every descriptor is kept O_NONBLOCK.
    {0}, {1}, {3}, {5}, {8}, {16}, {17}, {18}, {19}, {20}, {22}, {32}, {33}, {72}, {73}, {74}, {75},
    {77}, {138}, {217}, {292}, {293}, {436},
    // Sockets: AF_UNIX socketpair only (the VMM has no socket/connect/bind); sendto with an address
    // is refused before any host call; options are SOL_SOCKET's allowlist.
    {44}, {45}, {48}, {51}, {52}, {53}, {54}, {55},
    // epoll and eventfd on the program's own descriptors.
    {213}, {233}, {290}, {291},
    // Waits: timeouts rewritten by make_safe to zero or to an invalid value, never NULL.
    {7}, {232}, {281}, {23, Wait::kTimeval, 4}, {270, Wait::kTimespec, 4}, {271, Wait::kTimespec, 2},
    {202, Wait::kTimespec, 3}, {35, Wait::kTimespec, 0}, {230, Wait::kTimespec, 2},
    // Signals: the guest's dispositions, mask and alternate stack (VMM-side state) and
    // rt_sigreturn (the fake registers of TestGuest).
    {13}, {14}, {15}, {127}, {131},
    // Time and entropy: host clocks and getrandom written into guest memory.
    {96}, {201}, {228}, {229}, {318},
    // Identity and limits, read only or accepted and ignored by the VMM; arch_prctl writes the
    // fake kvm_run; getcwd reads the host's working directory.
    {24}, {39}, {63}, {79}, {97}, {98}, {99}, {100}, {102}, {104}, {107}, {108}, {110}, {111}, {115},
    {121}, {124}, {157}, {158}, {186}, {204}, {218}, {273}, {302}, {309}, {334},
    // sandpool's batch: its entries go through make_safe's batch rules.
    {static_cast<uint16_t>(kBatch)},
};
constexpr size_t kCallCount = sizeof kCalls / sizeof kCalls[0];

const Call* find_call(uint64_t nr) {
  for (const Call& c : kCalls)
    if (c.nr == nr) return &c;
  return nullptr;
}

// Argument values at the edges the handlers check: user memory is [kUserBase, kGuestBytes).
constexpr uint64_t kS = TestGuest::kScratch, kEnd = kGuestBytes, kUser = sp::vmm::kUserBase;
constexpr uint64_t kValues[] = {
    // small numbers: fds, signal numbers, counts, SEEK_*, SIG_*, AF_UNIX, SOL_SOCKET, EPOLL_CTL_*
    0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 15, 16, 19, 24, 32, 64, 65, 100, 128, 255, 256, 1023, 1024,
    // lengths
    4095, 4096, 4097, 8192, 65536, 1ull << 20, 2ull << 20, 48ull << 20, kEnd, kEnd + 1, 1ull << 32, 1ull << 40,
    1ull << 62, INT64_MAX,
    // negative numbers and their 32-bit forms
    ~0ull, ~1ull, static_cast<uint64_t>(-4095), static_cast<uint64_t>(-4096), 0xffffffffull, 0x80000000ull,
    0x7fffffffull, 1ull << 63,
    // guest pointers: scratch, its end, below user memory, the system area, the window edges,
    // straddling the end of guest memory, past it, non-canonical
    kS, kS + 8, kS + 4092, kS + kScratchBytes - 8, kS + kScratchBytes, kUser, kUser - 8, kUser - 1,
    sp::vmm::kPml4, sp::vmm::kGdt, TestGuest::kBrk, TestGuest::kLow, TestGuest::kHigh - 4096, TestGuest::kHigh,
    kEnd - 1, kEnd - 4, kEnd - 8, kEnd - 12, kEnd - 16, kEnd - 64, kEnd - 4096, kEnd + 4096, 1ull << 47,
    // flags
    MAP_PRIVATE | MAP_ANONYMOUS, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, MAP_SHARED, MAP_PRIVATE, PROT_READ | PROT_WRITE,
    MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED, MADV_DONTNEED, O_NONBLOCK, O_ASYNC, O_DIRECT,
    F_DUPFD_CLOEXEC, F_SETOWN_EX, F_GETOWN_EX, F_GETLK, F_SETLKW, FIONREAD, FIONBIO, TCGETS, SOCK_SEQPACKET,
    FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME, FUTEX_CMP_REQUEUE, 0x1002 /* ARCH_SET_FS */, 0x1003, kBatch,
};
constexpr size_t kValueCount = sizeof kValues / sizeof kValues[0];

// What a program may wait for: nothing, or a timeout Linux refuses with EINVAL (which must fail at
// once: poll() takes a negative timeout for "forever"). No valid non-zero timeout, so no call sleeps.
struct Timeout {
  int64_t sec, sub;  // sub: ns for a timespec, us for a timeval
  bool valid;
};
constexpr Timeout kTimeouts[] = {
    {0, 0, true},          {-1, 0, false},        {0, -1, false}, {INT64_MIN, 0, false},
    {-1, -1, false},       {0, INT64_MIN, false}, {INT64_MIN, INT64_MIN, false},
};
constexpr Timeout kTimespecOnly[] = {
    {0, 1000000000, false},  // tv_nsec out of range (a timeval's tv_usec is normalized instead)
    {0, INT64_MAX, false},
};

// Reads the input front to back; past its end every read is zero.
struct Reader {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint64_t le(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t{byte()} << (8 * i);
    return v;
  }
};

// One program's state besides the guest: recent results, for arguments that follow from them.
struct Program {
  TestGuest t;
  uint64_t results[8] = {};
  unsigned next_result = 0;
  uint64_t calls = 0;
  int max_host_fd = -1;
  int dev_zero = -1;  // the target's own copy, which the guest must never reach
};

[[noreturn]] void fail(const SyscallArgs& s, int64_t r, const char* what) {
  fprintf(stderr, "vmm_syscalls_fuzz: %s: %s(%llu)(0x%llx, 0x%llx, 0x%llx, 0x%llx, 0x%llx, 0x%llx) = %lld\n", what,
          sp::vmm::syscall_name(s.nr), static_cast<unsigned long long>(s.nr),
          static_cast<unsigned long long>(s.a[0]), static_cast<unsigned long long>(s.a[1]),
          static_cast<unsigned long long>(s.a[2]), static_cast<unsigned long long>(s.a[3]),
          static_cast<unsigned long long>(s.a[4]), static_cast<unsigned long long>(s.a[5]), static_cast<long long>(r));
  abort();
}

int nth_open_fd(const Program& p, unsigned k) {
  int open[sp::vmm::FdTable::kMaxFds];
  int n = 0;
  for (int fd = 0; fd < sp::vmm::FdTable::kMaxFds; ++fd)
    if (p.t.g.fds.host(fd) >= 0) open[n++] = fd;
  return n ? open[k % n] : static_cast<int>(k);
}

uint64_t argument(Program& p, Reader& in) {
  uint8_t b = in.byte();
  if (b < 0x60) return kValues[b % kValueCount];
  if (b < 0x80) return kS + (b & 31) * 128;
  if (b < 0xa0) return static_cast<uint64_t>(nth_open_fd(p, b & 31));
  if (b < 0xc0) return p.results[(p.next_result + 7 - (b & 7)) % 8] + ((b >> 3) & 3) * 4096;
  switch ((b >> 4) & 3) {
    case 0: return in.le(1);
    case 1: return in.le(2);
    case 2: return static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(in.le(4))));
    default: return in.le(8);
  }
}

// Writes the timeout `pick` chooses where the call's timeout argument points (NULL becomes
// kTimeoutSlot: NULL is "forever"); a pointer outside user memory is left for the handler to
// refuse. Returns whether the handler gets a timeout Linux would refuse.
bool set_timeout(TestGuest& t, SyscallArgs& s, const Call& c, uint8_t pick) {
  if (s.a[c.arg] == 0) s.a[c.arg] = kTimeoutSlot;
  if (!t.g.mem.user_range_ok(s.a[c.arg], 16)) return false;
  constexpr size_t kCommon = sizeof kTimeouts / sizeof kTimeouts[0];
  size_t count = kCommon + (c.wait == Wait::kTimespec ? sizeof kTimespecOnly / sizeof kTimespecOnly[0] : 0);
  size_t i = pick % count;
  const Timeout& to = i < kCommon ? kTimeouts[i] : kTimespecOnly[i - kCommon];
  const int64_t v[2] = {to.sec, to.sub};
  t.g.mem.copy_out(s.a[c.arg], v, sizeof v);
  return !to.valid;
}

// Rewrites the arguments that could make a call wait. (epoll_ctl's EPOLLWAKEUP, which would make a
// host-wide wakeup source when run as root, the VMM now drops itself.) Returns whether the call
// got an invalid timeout.
bool make_safe(TestGuest& t, SyscallArgs& s, const Call& c, uint8_t timeout_pick) {
  switch (s.nr) {
    case 7: s.a[2] = 0; break;                 // poll
    case 232: case 281: s.a[3] = 0; break;     // epoll_wait, epoll_pwait
    case 73: s.a[1] |= LOCK_NB; break;         // flock: a pipe's two ends are two open files
    case 302: s.a[2] = 0; break;               // prlimit64: read only
    case 202: {  // futex: only the wait operations read a timeout
      int op = static_cast<int>(s.a[1]) & FUTEX_CMD_MASK;
      if (op != FUTEX_WAIT && op != FUTEX_WAIT_BITSET) return false;
      break;
    }
    case kBatch: {
      // The entries run in one call: an F_SETFL entry could clear O_NONBLOCK before a recvfrom or
      // write entry. The handler reads all records before it runs any, so rewriting them here holds.
      uint64_t count = s.a[1];
      sp::vmm::BatchEntry e[sp::vmm::kBatchMax];
      if (count == 0 || count > sp::vmm::kBatchMax || !t.g.mem.copy_in(e, s.a[0], count * sizeof e[0])) break;
      for (uint64_t i = 0; i < count; ++i) {
        if (e[i].nr == 72 && e[i].a[1] == F_SETFL) e[i].a[2] |= O_NONBLOCK;
        if (e[i].nr == 44 || e[i].nr == 45) e[i].a[3] |= MSG_DONTWAIT;
      }
      t.g.mem.copy_out(s.a[0], e, count * sizeof e[0]);
      break;
    }
  }
  return c.wait != Wait::kNone && set_timeout(t, s, c, timeout_pick);
}

bool is_errno(int64_t r) { return r >= -4095 && r <= -1; }

// What a result must be, whatever the arguments were.
void check_result(Program& p, const SyscallArgs& s, int64_t r, bool invalid_timeout) {
  const sp::vmm::Guest& g = p.t.g;
  if (r == sp::vmm::kNoReturnValue) {
    if (s.nr != 15) fail(s, r, "kNoReturnValue from a call that returns a value");
    return;
  }
  if (s.nr == 15) fail(s, r, "rt_sigreturn returned a value");
  if (r < 0 && !is_errno(r)) fail(s, r, "negative result outside [-4095, -1]");
  if (invalid_timeout && r >= 0) fail(s, r, "an invalid timeout was accepted");
  if (r < 0) return;
  auto open = [&](int64_t fd) { return fd >= 0 && fd < sp::vmm::FdTable::kMaxFds && g.fds.host(fd) >= 0; };
  auto page_up = [](uint64_t v) { return sp::vmm::page_up(v); };
  switch (s.nr) {
    case 9:  // mmap
    case 25: {  // mremap
      uint64_t len = page_up(s.nr == 9 ? s.a[1] : s.a[2]);
      uint64_t at = static_cast<uint64_t>(r);
      if (!sp::vmm::page_aligned(at) || !g.mem.user_range_ok(at, len) || !g.as.is_mapped(at, len))
        fail(s, r, "a mapping outside user memory or not recorded");
      break;
    }
    case 12:
      if (static_cast<uint64_t>(r) != g.brk_cur) fail(s, r, "brk returned another break than it keeps");
      break;
    case 32: case 33: case 292: case 213: case 290: case 291:
      if (!open(r)) fail(s, r, "a descriptor that is not open");
      if ((s.nr == 33 || s.nr == 292) && r != static_cast<int64_t>(s.a[1])) fail(s, r, "dup2/dup3 to another fd");
      break;
    case 72:
      if ((s.a[1] == F_DUPFD || s.a[1] == F_DUPFD_CLOEXEC) && (!open(r) || r < static_cast<int64_t>(s.a[2])))
        fail(s, r, "F_DUPFD gave a wrong descriptor");
      break;
    case 22: case 293: case 53: {  // pipe, pipe2, socketpair
      int fds[2];
      if (!g.mem.copy_in(fds, s.nr == 53 ? s.a[3] : s.a[0], sizeof fds) || !open(fds[0]) || !open(fds[1]) ||
          fds[0] == fds[1])
        fail(s, r, "a pair of descriptors that is not two open ones");
      break;
    }
    case 3:
      if (open(static_cast<int64_t>(s.a[0]))) fail(s, r, "close left the descriptor open");
      break;
    case 0: case 1: case 17: case 18: case 44:  // not recvfrom: MSG_TRUNC and MSG_OOB may say more
      if (static_cast<uint64_t>(r) > s.a[2]) fail(s, r, "more bytes than asked");
      break;
    case 318:
      if (static_cast<uint64_t>(r) > s.a[1]) fail(s, r, "more random bytes than asked");
      break;
    case 7:
      if (static_cast<uint64_t>(r) > s.a[1]) fail(s, r, "more ready descriptors than given");
      break;
    case kBatch:
      if (static_cast<uint64_t>(r) > s.a[1]) fail(s, r, "more batch entries run than given");
      break;
  }
}

// The guest's bookkeeping, after every call. Also puts O_NONBLOCK back on every descriptor (pipe,
// eventfd2 without EFD_NONBLOCK, ioctl FIONBIO, F_SETFL may clear it) so that the next read or
// write cannot wait.
void check_guest(Program& p, const SyscallArgs& s, int64_t r) {
  sp::vmm::Guest& g = p.t.g;
  if (g.unknown_syscalls != 0) fail(s, r, "a listed call was answered as unknown");
  if (g.syscall_count != p.calls) fail(s, r, "the syscall counter is off");
  if (g.brk_start != TestGuest::kBrk || g.brk_cur < g.brk_start || g.brk_cur > g.mem.size())
    fail(s, r, "brk outside [brk_start, memory size]");
  if (!g.as.is_free(0, kUser) || !g.as.is_free(g.mem.size(), ~0ull - g.mem.size()) ||
      g.as.mapped_bytes() > g.mem.size() - kUser)
    fail(s, r, "the address space maps outside user memory");
  constexpr uint64_t kUnblockable = (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1));
  if (g.sig.blocked & kUnblockable) fail(s, r, "SIGKILL or SIGSTOP blocked");
  if (g.sig.actions[SIGKILL].handler != 0 || g.sig.actions[SIGSTOP].handler != 0)
    fail(s, r, "a handler for SIGKILL or SIGSTOP");
  if (g.sig.altstack_flags != 0 && !(g.sig.altstack_flags == 2 && g.sig.altstack_sp == 0 && g.sig.altstack_size == 0))
    fail(s, r, "an alternate stack state sigaltstack cannot make");
  const auto& sregs = p.t.run.s.regs.sregs;
  if (sregs.fs.base >= (1ull << 47) || sregs.gs.base >= (1ull << 47)) fail(s, r, "a non-canonical fs or gs base");
  if (!g.exited && (p.t.regs.rip >= (1ull << 47) || p.t.regs.rsp >= (1ull << 47)))
    fail(s, r, "a non-canonical rip or rsp to resume at");

  // SAFETY: lseek on the guest memory's own memfd, which this TestGuest owns. A page in the system
  // area exists only if something wrote or read there: no syscall may (page tables, GDT, stubs).
  off_t data = lseek(g.mem.memfd(), 0, SEEK_DATA);
  if (data >= 0 && static_cast<uint64_t>(data) < kUser) fail(s, r, "the system area was touched");

  int hosts[sp::vmm::FdTable::kMaxFds];
  int n = 0;
  for (int fd = 0; fd < sp::vmm::FdTable::kMaxFds; ++fd) {
    int h = g.fds.host(fd);
    if (h < 0) continue;
    // SAFETY: h is owned by the guest's fd table; F_GETFL/F_SETFL only change its status flags.
    int fl = fcntl(h, F_GETFL);
    if (fl < 0) fail(s, r, "the fd table holds a closed host descriptor");
    if (!(fl & O_NONBLOCK)) fcntl(h, F_SETFL, fl | O_NONBLOCK);
    if (h == g.mem.memfd() || h == p.dev_zero) fail(s, r, "the fd table reaches a descriptor the guest was not given");
    hosts[n++] = h;
    p.max_host_fd = std::max(p.max_host_fd, h);
  }
  std::sort(hosts, hosts + n);
  if (std::adjacent_find(hosts, hosts + n) != hosts + n) fail(s, r, "two guest fds own one host descriptor");
  for (int fd : g.async_fds)
    if (g.fds.host(fd) < 0) fail(s, r, "an O_ASYNC entry for a closed descriptor");
}

int64_t run_call(Program& p, Reader& in, const Call& c) {
  SyscallArgs s;
  s.nr = c.nr;
  for (uint64_t& a : s.a) a = argument(p, in);
  uint8_t timeout_pick = c.wait != Wait::kNone ? in.byte() : 0;
  bool invalid_timeout = make_safe(p.t, s, c, timeout_pick);
  ++p.calls;
  int64_t r = sp::vmm::dispatch_syscall(p.t.g, s);
  check_result(p, s, r, invalid_timeout);
  // As the run loop does after each trap: O_ASYNC readiness becomes SIGIO, then pending signals
  // are delivered onto the guest's registers and stack.
  if (sp::vmm::take_io_ready() && !p.t.g.async_fds.empty()) p.t.g.sig.pending |= 1ull << (SIGIO - 1);
  if (!p.t.g.exited) sp::vmm::deliver_pending(p.t.g);
  check_guest(p, s, r);
  p.results[p.next_result++ % 8] = static_cast<uint64_t>(r);
  return r;
}

void poke_bytes(Program& p, Reader& in) {
  uint64_t off = in.le(2) % kPokeWindow;
  uint8_t n = in.byte();
  uint8_t buf[255];
  for (uint8_t i = 0; i < n; ++i) buf[i] = in.byte();
  p.t.g.mem.copy_out(kS + off, buf, n);
}

void poke_word(Program& p, Reader& in) {
  uint64_t off = in.le(2) % kPokeWindow;
  p.t.g.mem.write(kS + off, argument(p, in));
}

// A watchdog for the rule that nothing waits: if an input runs for kWatchdogSeconds, a handler
// is waiting on the host (a timeout make_safe did not cover, or a handler ignoring it). Aborts, so
// that the driver reports the input as it does a crash.
constexpr int kWatchdogSeconds = 10;
timer_t g_watchdog;
volatile sig_atomic_t g_current_nr = -1;

void on_watchdog(int) {
  char msg[96] = "vmm_syscalls_fuzz: the input ran too long (a handler waited?); last syscall ";
  size_t n = strlen(msg);
  char digits[12];
  int d = 0;
  for (long v = g_current_nr < 0 ? 0 : g_current_nr; d == 0 || v > 0; v /= 10) digits[d++] = static_cast<char>('0' + v % 10);
  while (d > 0 && n < sizeof msg - 2) msg[n++] = digits[--d];
  msg[n++] = '\n';
  // SAFETY: write and abort are async-signal-safe.
  (void)!write(2, msg, n);
  abort();
}

// Once per process: the VMM's own signal setup (SIGPIPE, SIGXFSZ ignored: a guest writing to a
// pipe without reader gets EPIPE, not the fuzzer killed), the watchdog, the /dev/zero descriptor
// each guest gets a copy of, and the host descriptors open between inputs (for the leak check).
struct Process {
  int dev_zero = -1;
  static constexpr int kFdScan = 512;
  std::bitset<kFdScan> open_between;
  int lowest_free = -1;

  Process() {
    sp::vmm::install_process_signals();
    dev_zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (dev_zero < 0) {
      perror("vmm_syscalls_fuzz: /dev/zero");
      abort();
    }
    struct sigaction sa {};
    sa.sa_handler = on_watchdog;
    int sig = SIGRTMIN + 6;  // the VMM uses SIGRTMIN+3 (kick) and +4 (O_ASYNC)
    sigaction(sig, &sa, nullptr);
    sigevent ev{};
    ev.sigev_notify = SIGEV_THREAD_ID;  // this thread: libFuzzer may run others
    ev.sigev_signo = sig;
#ifdef sigev_notify_thread_id
    ev.sigev_notify_thread_id = gettid();
#else
    ev._sigev_un._tid = gettid();  // older glibc has no name for the field but this one
#endif
    if (timer_create(CLOCK_MONOTONIC, &ev, &g_watchdog) != 0) {
      perror("vmm_syscalls_fuzz: timer_create");
      abort();
    }
    note_descriptors();
  }
  static int lowest_free_fd(int any_open) {
    int fd = fcntl(any_open, F_DUPFD_CLOEXEC, 0);
    close(fd);
    return fd;
  }
  void note_descriptors() {
    for (int fd = 0; fd < kFdScan; ++fd) open_between[fd] = fcntl(fd, F_GETFD) >= 0;
    lowest_free = lowest_free_fd(dev_zero);
  }
  // The driver opens descriptors of its own between inputs (libFuzzer's symbolizer pipes, when it
  // prints a new function); a new one takes the lowest free number, so checking that is enough.
  void before_input() {
    if (lowest_free_fd(dev_zero) != lowest_free) note_descriptors();
  }
  void arm(int seconds) const {
    itimerspec its{};
    its.it_value.tv_sec = seconds;
    timer_settime(g_watchdog, 0, &its, nullptr);
  }
};

// The descriptors a guest starts with: a memfd (a regular file for pread/pwrite/lseek/ftruncate/
// locks and file-backed mmap) sealed at 64 KiB, so that no program can make it hold more memory,
// and /dev/zero (a character device: mmap's zero-page path, ioctls that do not apply).
void give_descriptors(TestGuest& t, const Process& proc) {
  int mem = memfd_create("vmm_syscalls_fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mem < 0 || ftruncate(mem, 64 << 10) != 0 ||
      fcntl(mem, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
    perror("vmm_syscalls_fuzz: memfd");
    abort();
  }
  (void)t.g.fds.install_at(3, sp::UniqueFd(mem));
  (void)t.g.fds.install_at(4, sp::UniqueFd(fcntl(proc.dev_zero, F_DUPFD_CLOEXEC, 3)));
}

void check_no_leak(const Process& proc, int max_host_fd) {
  int hi = std::min(Process::kFdScan, max_host_fd + 16);
  for (int fd = 0; fd < hi; ++fd) {
    if ((fcntl(fd, F_GETFD) >= 0) != proc.open_between[fd]) {
      char link[64], target[256] = "?";
      snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
      ssize_t n = readlink(link, target, sizeof target - 1);
      target[n > 0 ? n : 1] = '\0';
      fprintf(stderr, "vmm_syscalls_fuzz: host descriptor %d (%s) %s after the guest was destroyed\n", fd, target,
              proc.open_between[fd] ? "closed" : "leaked");
      abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Process proc;
  proc.before_input();
  Reader in{data, size};
  int max_host_fd;
  proc.arm(kWatchdogSeconds);
  {
    Program p;
    if (p.t.g.mem.size() != kGuestBytes) abort();  // kValues assumes TestGuest's 64 MiB
    p.dev_zero = proc.dev_zero;
    give_descriptors(p.t, proc);
    while (!in.empty() && p.calls < kMaxCalls && !p.t.g.exited) {
      uint8_t op = in.byte();
      if (op < 0xe0) {
        const Call& c = kCalls[op % kCallCount];
        g_current_nr = c.nr;
        run_call(p, in, c);
      } else if (op < 0xf0) {
        poke_bytes(p, in);
      } else if (op < 0xfe) {
        poke_word(p, in);
      } else {
        uint64_t nr = in.le(2);
        const Call* c = find_call(nr);
        const Call& call = c ? *c : kCalls[nr % kCallCount];
        g_current_nr = call.nr;
        run_call(p, in, call);
      }
    }
    max_host_fd = p.max_host_fd;
  }
  proc.arm(0);
  g_current_nr = -1;
  check_no_leak(proc, max_host_fd);
  return 0;
}
