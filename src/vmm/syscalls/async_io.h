// Signal-driven I/O for the guest (fcntl O_ASYNC / F_SETOWN, SIGIO): the host kernel signals the
// vCPU thread (kIoSignal, a no-op handler that also stops a running KVM_RUN) when an O_ASYNC
// descriptor becomes ready, and the run loop raises SIGIO in the guest. Not a general event loop.
#pragma once

#include "vmm/guest.h"

namespace sp::vmm {

// SIGRTMIN + 4: what the host sends the vCPU thread for guest O_ASYNC descriptors.
int io_signal();

// Installs the kIoSignal handler (once per process).
void install_io_signal_handler();

// Sets or clears O_ASYNC on guest fd `fd` (whose host descriptor is `hfd`): the host descriptor
// gets owner = the calling (vCPU) thread and signal kIoSignal. Returns 0 or -errno.
int64_t set_async(Guest& g, long fd, int hfd, bool on);

// At run() start, on the vCPU thread: points the signal at this thread (a clone may run on another
// thread than its template) and registers `run` for the handler's immediate_exit.
void attach_async_io(Guest& g, kvm_run* run);
void detach_async_io();

// After a trap: true once per host notification since the last call (then raise SIGIO).
bool take_io_ready();
// Whether a host notification waits for take_io_ready(), without taking it (a blocking call
// about to start looks, with the io signal blocked: signal_waiting(), GuestWait).
bool io_ready_pending();

}  // namespace sp::vmm
