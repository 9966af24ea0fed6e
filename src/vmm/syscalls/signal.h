// Signal delivery into the guest (Linux x86-64 rt_sigframe layout) and the mapping of CPU
// exceptions to signals. The signal syscalls themselves are registered by register_signal_syscalls.
#pragma once

#include <poll.h>
#include <signal.h>

#include <cstdint>
#include <ctime>

#include "vmm/guest.h"

namespace sp::vmm {

struct SignalInfo {
  int signo = 0;
  int code = 0;        // si_code
  uint64_t addr = 0;   // si_addr for faults
  bool synchronous = false;  // a fault: cannot stay pending; blocked or ignored means death
  uint32_t trapno = 0, error_code = 0;
  uint64_t cr2 = 0;
};

// Maps CPU exception `vector` (with its error code and CR2) to the signal Linux would send.
SignalInfo signal_for_exception(uint32_t vector, uint32_t error_code, uint64_t cr2);

// Delivers `info` now, on g.regs: builds the frame on the guest's stack (or alternate stack) and
// redirects to the handler; or applies the default action (ignore, or kill: g.exited with
// term_signal). A frame that cannot be written kills the guest with SIGSEGV, as Linux does.
void deliver_signal(Guest& g, const SignalInfo& info);

// Delivers the lowest pending, unblocked asynchronous signal, if any.
void deliver_pending(Guest& g);

// Whether a signal waits for the guest: a pending, unblocked one (a host signal that stopped the
// guest as it entered a syscall is delivered after that syscall), the host's notification of a
// guest O_ASYNC descriptor not yet turned into SIGIO, or the host's interrupt (SIGINT, unless the
// guest blocks it) or kill requested but not yet seen by the run loop. A syscall about to block
// returns EINTR instead, as Linux does with a signal pending (GuestWait).
bool signal_waiting(const Guest& g);

// The host signal another thread sends the vCPU thread to stop KVM_RUN or a blocking host call
// (Vm::interrupt): SIGRTMIN + 3.
int kick_signal_number();

// The host side of a guest call that may block (sleeps, poll, select, epoll_wait, pause, futex
// waits, reads and writes of a descriptor that is not ready). Linux ends such a call with EINTR
// when a signal for the caller arrives or already waits. While a GuestWait lives, the host's kick and io
// signals (and SIGINT, SIGALRM: vm-run's) are blocked, so that none lands between interrupted()
// and the wait, unseen; the wait passes mask() to ppoll or epoll_pwait, which unblock them for
// its duration only.
class GuestWait {
 public:
  explicit GuestWait(const Guest& g);
  ~GuestWait();
  GuestWait(const GuestWait&) = delete;
  GuestWait& operator=(const GuestWait&) = delete;

  // A signal already waits (signal_waiting): answer EINTR, unless what the call waits for is
  // ready now (poll with no timeout first), as Linux does.
  bool interrupted() const { return interrupted_; }
  const sigset_t* mask() const { return &old_; }
  // ppoll(fds, n, timeout) with mask(): > 0 ready, 0 timed out, -errno (EINTR: a signal).
  int poll(pollfd* fds, nfds_t n, const timespec* timeout) const;

 private:
  sigset_t old_;
  bool interrupted_;
};

// Waits on the host until `clock` reaches `end_ns`, unless a signal for the guest waits or arrives:
// 0 once reached, -EINTR otherwise (the sleeps and futex waits).
int64_t wait_until(const Guest& g, clockid_t clock, int64_t end_ns);

// Nanoseconds of a timespec, its seconds capped at 2^32 (136 years) so that a guest's huge
// request cannot overflow (a clock's now plus the cap still fits in 63 bits).
int64_t ns_of(const timespec& t);
timespec ts_of(int64_t ns);

// Before a read (`events` POLLIN) or write (POLLOUT) on host descriptor `hfd` that may block
// (`flags`: the call's MSG_DONTWAIT): 0 when it will not (ready, an end or an error is there, or
// the descriptor does not block), -EINTR when a signal for the guest waits or arrives first,
// -EAGAIN when a socket's SO_RCVTIMEO / SO_SNDTIMEO passes first; on 0 the caller does its call.
// (A write may still block part-way, once what was ready is taken; a signal then ends it with
// what it wrote, as on Linux.)
int64_t wait_ready(const Guest& g, int hfd, short events, int flags = 0);

}  // namespace sp::vmm
