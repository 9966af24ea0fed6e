// Signal delivery frames, rt_sigreturn, default actions and faults that cannot be handled.
#include "vmm/syscalls/signal.h"

#include <csignal>

#include <doctest/doctest.h>

#include "test_guest.h"

using namespace sp::vmm;
using sp::vmm::testing::TestGuest;

namespace {

void set_handler(TestGuest& t, int sig, uint64_t handler, uint64_t flags = 0x04000004) {
  SigAction a{handler, flags, 0x400100 /* restorer */, 0};
  uint64_t p = TestGuest::kScratch + 8192;
  t.g.mem.write(p, a);
  REQUIRE(t.call(13, sig, p, 0, 8) == 0);
}

}  // namespace

TEST_CASE("a fault with a handler builds a Linux rt_sigframe and rt_sigreturn restores") {
  TestGuest t;
  set_handler(t, SIGSEGV, 0x401000);
  t.regs.rip = 0x402345;
  t.regs.rax = 77;
  t.regs.r15 = 15;
  uint64_t old_rsp = t.regs.rsp;
  deliver_signal(t.g, signal_for_exception(14, 6, 0xdead000));
  CHECK_FALSE(t.g.exited);
  CHECK(t.regs.rip == 0x401000);
  CHECK(t.regs.rdi == SIGSEGV);
  CHECK((t.regs.rsp + 8) % 16 == 0);
  CHECK(t.regs.rsp < old_rsp - 128);
  uint64_t ret = 0, addr = 0, saved_rip = 0;
  int32_t signo = 0;
  CHECK(t.g.mem.read(t.regs.rsp, &ret));
  CHECK(ret == 0x400100);  // returns into the restorer
  CHECK(t.g.mem.read(t.regs.rsi, &signo));
  CHECK(signo == SIGSEGV);
  CHECK(t.g.mem.read(t.regs.rsi + 16, &addr));
  CHECK(addr == 0xdead000);
  CHECK(t.g.mem.read(t.regs.rdx + 40 + 16 * 8, &saved_rip));  // uc_mcontext.rip
  CHECK(saved_rip == 0x402345);
  CHECK((t.g.sig.blocked & (1ull << (SIGSEGV - 1))) != 0);
  // The handler returns: `ret` pops pretcode, the restorer calls rt_sigreturn.
  t.regs.rsp += 8;
  t.regs.rax = 15;
  CHECK(t.call(15) == kNoReturnValue);
  CHECK(t.regs.rip == 0x402345);
  CHECK(t.regs.rax == 77);
  CHECK(t.regs.r15 == 15);
  CHECK(t.regs.rsp == old_rsp);
  CHECK((t.g.sig.blocked & (1ull << (SIGSEGV - 1))) == 0);
}

TEST_CASE("a fault without a handler, or while blocked, kills the guest") {
  TestGuest t;
  deliver_signal(t.g, signal_for_exception(13, 0, 0));
  CHECK(t.g.exited);
  CHECK(t.g.term_signal == SIGSEGV);
  CHECK(t.g.exit_code == 128 + SIGSEGV);

  TestGuest u;
  set_handler(u, SIGILL, 0x401000);
  u.g.sig.blocked = 1ull << (SIGILL - 1);
  deliver_signal(u.g, signal_for_exception(6, 0, 0));
  CHECK(u.g.exited);
  CHECK(u.g.term_signal == SIGILL);
}

TEST_CASE("a frame that does not fit in guest memory kills with SIGSEGV") {
  TestGuest t;
  set_handler(t, SIGFPE, 0x401000);
  t.regs.rsp = 0x1000;  // the page tables: not writable by the guest
  deliver_signal(t.g, signal_for_exception(0, 0, 0));
  CHECK(t.g.exited);
  CHECK(t.g.term_signal == SIGSEGV);
}

TEST_CASE("a handler at a non-canonical address kills with SIGSEGV instead of resuming there") {
  // Found by tests/fuzz/vmm_syscalls_fuzz.cc: rip became the handler, and the next VM entry failed.
  TestGuest t;
  set_handler(t, SIGPIPE, 1ull << 47);
  const uint64_t old_rip = t.regs.rip;
  t.g.sig.pending = 1ull << (SIGPIPE - 1);
  deliver_pending(t.g);
  CHECK(t.g.exited);
  CHECK(t.g.term_signal == SIGSEGV);
  CHECK(t.regs.rip == old_rip);
}

TEST_CASE("rt_sigreturn with a bad frame kills; sigaction/sigprocmask reject bad sizes") {
  TestGuest t;
  t.regs.rsp = 0x2000;
  CHECK(t.call(15) == kNoReturnValue);
  CHECK(t.g.exited);
  TestGuest u;
  CHECK(u.call(13, SIGINT, 0, 0, 4) == -EINVAL);
  CHECK(u.call(13, SIGKILL, TestGuest::kScratch, 0, 8) == -EINVAL);
  CHECK(u.call(13, 65, 0, 0, 8) == -EINVAL);
  CHECK(u.call(13, SIGINT, 0x1000, 0, 8) == -EFAULT);
  CHECK(u.call(14, 0, 0x1000, 0, 8) == -EFAULT);
  CHECK(u.call(14, 99, TestGuest::kScratch, 0, 8) == -EINVAL);
  CHECK(u.call(131 /* sigaltstack */, 0x1000, 0) == -EFAULT);
}

TEST_CASE("pending SIGINT: default kills, ignored is dropped, blocked waits, handler runs") {
  TestGuest t;
  t.g.sig.pending = 1ull << (SIGINT - 1);
  deliver_pending(t.g);
  CHECK(t.g.exited);
  CHECK(t.g.exit_code == 130);

  TestGuest u;
  set_handler(u, SIGINT, 1 /* SIG_IGN */);
  u.g.sig.pending = 1ull << (SIGINT - 1);
  deliver_pending(u.g);
  CHECK_FALSE(u.g.exited);
  CHECK(u.g.sig.pending == 0);

  TestGuest v;
  set_handler(v, SIGINT, 0x401000);
  v.g.sig.blocked = 1ull << (SIGINT - 1);
  v.g.sig.pending = 1ull << (SIGINT - 1);
  deliver_pending(v.g);
  CHECK(v.g.sig.pending != 0);
  v.g.sig.blocked = 0;
  deliver_pending(v.g);
  CHECK(v.regs.rip == 0x401000);
  CHECK(v.regs.rdi == SIGINT);
  CHECK(v.call(62 /* kill */, v.g.pid, 0) == 0);
  CHECK(v.call(62, 12345, SIGINT) == -ESRCH);
}
