// One micro-VM running one Linux program at guest CPL3 with no guest kernel: the public API of
// src/vmm for `vm-run` and the server. Not thread-safe except interrupt(): create() and run() are
// called on one thread (the vCPU thread), interrupt() from any thread or signal handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "util/result.h"
#include "vmm/guest.h"
#include "vmm/kvm.h"
#include "vmm/trap.h"
#include "vmm/vdso.h"

namespace sp::vmm {

struct VmConfig {
  uint64_t memory_bytes = 1ull << 30;
  std::string program;             // host path (a bare name is looked up in /usr/local/bin:/usr/bin:/bin)
  std::vector<std::string> argv;   // argv[0] included
  std::vector<std::string> envp;
  // Guest fd -> host fd the VMM duplicates at create(); the caller keeps its own. The agent
  // channel is one more entry, e.g. {3, socketpair_end}.
  std::vector<std::pair<int, int>> fds = {{0, 0}, {1, 1}, {2, 2}};
  TrapBackend backend = TrapBackend::kTripleFault;
  bool trace = false;  // log every syscall at info level
  bool vdso = true;    // give the guest a vDSO (clock reads without exits)
};

struct VmExit {
  int exit_code = 0;    // exit_group's status, or 128 + term_signal
  int term_signal = 0;  // the signal that ended the guest, 0 for a normal exit
  uint64_t syscalls = 0;
  uint64_t unknown_syscalls = 0;
};

struct VmTimings {
  uint64_t create_ns = 0;       // KVM VM + memory + vCPU + system area
  uint64_t load_ns = 0;         // ELF loading, stack and vCPU registers
  uint64_t first_exit_ns = 0;   // create() start -> the guest's first exit (first syscall or fault)
  uint64_t run_ns = 0;          // run() start -> exit
};

class Vm {
 public:
  // Creates the VM, loads cfg.program and prepares the vCPU at its first instruction.
  static Result<std::unique_ptr<Vm>> create(const VmConfig& cfg);

  // Runs the guest until it exits or is killed by a signal. An error means the VMM could not go on
  // (an unexpected KVM exit or ioctl failure); the guest is dead either way.
  Result<VmExit> run();

  // Requests SIGINT for the guest (Python: KeyboardInterrupt). Async-signal-safe; from another
  // thread, also signal the vCPU thread (any handled signal without SA_RESTART) so KVM_RUN returns.
  void interrupt() {
    interrupt_requested_.store(true, std::memory_order_release);
    vcpu_.kick();
  }

  const Guest& guest() const { return guest_; }
  const VmTimings& timings() const { return timings_; }
  TrapBackend backend() const { return backend_; }

 private:
  Vm() = default;
  KvmVm vm_;
  KvmVcpu vcpu_;
  Guest guest_;
  TrapBackend backend_ = TrapBackend::kTripleFault;
  VdsoClock vdso_clock_;
  bool vdso_ = false;
  VmTimings timings_;
  uint64_t created_at_ns_ = 0;
  std::atomic<bool> interrupt_requested_{false};
};

}  // namespace sp::vmm
