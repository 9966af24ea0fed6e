// Signal delivery into the guest (Linux x86-64 rt_sigframe layout) and the mapping of CPU
// exceptions to signals. The signal syscalls themselves are registered by register_signal_syscalls.
#pragma once

#include <cstdint>

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
// guest as it entered a syscall is delivered after that syscall), or the host's notification of
// a guest O_ASYNC descriptor not yet turned into SIGIO. A syscall about to block returns EINTR
// instead, as Linux does with a signal pending (time.cc's sleeps).
bool signal_waiting(const Guest& g);

}  // namespace sp::vmm
