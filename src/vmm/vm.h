// One micro-VM running one Linux program at guest CPL3 with no guest kernel: the public API of
// src/vmm for `vm-run` and the server. Not thread-safe except interrupt(): create() and run() are
// called on one thread (the vCPU thread), interrupt() from any thread or signal handler.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "util/result.h"
#include "vmm/guest.h"
#include "vmm/kvm.h"
#include "vmm/memslots.h"
#include "vmm/snapshot.h"
#include "vmm/syscalls/dispatch.h"
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
  // >= 0: stop before the guest's first read() of this fd and return from run() with `frozen`
  // set, ready for snapshot() (a warmed template waiting for its first request). It must be one of
  // `fds` (a placeholder, e.g. an empty pipe); the freeze matches that descriptor itself, so a file
  // that later gets the same fd number (after the guest closed it) does not trigger it.
  int freeze_on_read_fd = -1;
  // With freeze_on_read_fd: a directory (descriptor) where the guest memory is made as an unnamed
  // file instead of a memfd (GuestMemory::create), e.g. a tmpfs mounted with huge=always.
  int memory_dir_fd = -1;
};

struct VmExit {
  int exit_code = 0;    // exit_group's status, or 128 + term_signal
  int term_signal = 0;  // the signal that ended the guest, 0 for a normal exit
  uint64_t syscalls = 0;
  uint64_t unknown_syscalls = 0;
  bool frozen = false;  // stopped for a snapshot (VmConfig::freeze_on_read_fd), not ended
  bool paused = false;  // stopped before a read (Vm::pause_before_read); the next run() goes on
};

struct VmTimings {
  uint64_t create_ns = 0;       // KVM VM + memory + vCPU + system area
  uint64_t load_ns = 0;         // ELF loading, stack and vCPU registers
  uint64_t first_exit_ns = 0;   // create() start -> the guest's first exit (first syscall or fault)
  uint64_t clone_ns = 0;        // clone(): start -> ready to enter the guest
  uint64_t run_ns = 0;          // run() start -> exit
  uint64_t kvm_run_ns = 0;      // of which inside KVM_RUN (guest code, shadow-page faults, exits)
  uint64_t exits = 0;           // KVM_RUN returns
  uint64_t memslot_faults = 0;  // first touches of a guest memory chunk KVM had no memslot for
};

// CLOCK_MONOTONIC in ns; /dev/kvm opened once per process (shared by every VM and clone).
uint64_t now_ns();
Result<Kvm*> shared_kvm();
void install_process_signals();  // kick handler; SIGPIPE and SIGXFSZ ignored (idempotent)

class Vm {
 public:
  // Creates the VM, loads cfg.program and prepares the vCPU at its first instruction.
  static Result<std::unique_ptr<Vm>> create(const VmConfig& cfg);

  // A clone of `snap`: memory mapped MAP_PRIVATE over the template's memfd (copy-on-write), vCPU
  // and process state restored; `fds` (guest fd -> host fd, duplicated) replace or add descriptors.
  // Its first run() completes the frozen syscall with the clone's descriptors. `snap` must outlive
  // nothing: the clone keeps its own mapping.
  static Result<std::unique_ptr<Vm>> clone(const VmSnapshot& snap, const std::vector<std::pair<int, int>>& fds);

  // Gives the guest descriptor `guest_fd` as a duplicate of `host_fd` (replacing any), e.g. to bind
  // a clone made ahead of time to a session's socketpair just before its first run().
  Status attach_fd(int guest_fd, int host_fd);

  // Runs the guest until it exits, is killed by a signal, or freezes. An error means the VMM could
  // not go on (an unexpected KVM exit or ioctl failure); the guest is dead either way.
  Result<VmExit> run();

  // The next run() returns (VmExit::paused) just before the guest's next read() (or recvfrom(),
  // recvmsg()) of `guest_fd`, instead of making it; the run() after that makes the read and goes
  // on. One-shot. A pool's VMM child runs its clone's guest ahead this way up to the point where it
  // needs its session, and reports its sandbox ready once the agent waits for its first request.
  void pause_before_read(int guest_fd) { pause_fd_ = guest_fd; }

  // After run() returned `frozen`: the snapshot of this VM (triple-fault backend only). This VM must
  // not run again; its memfd now belongs to the snapshot.
  Result<std::unique_ptr<VmSnapshot>> snapshot();

  // Requests SIGINT for the guest (Python: KeyboardInterrupt). Async-signal-safe. Called from a
  // thread other than the one in run(), it also sends that thread kKickSignal (a no-op handler,
  // installed by run() without SA_RESTART) so that a KVM_RUN or a blocking host call returns EINTR.
  void interrupt();
  static int kick_signal();  // SIGRTMIN + 3

  // Ends the guest as SIGKILL would (run() returns term_signal SIGKILL). Async-signal-safe, any
  // thread; like interrupt() it kicks a blocked KVM_RUN or host call. The pool's deadline watcher
  // uses it when a cell ignores the SIGINT past its grace period.
  void kill();

  const Guest& guest() const { return guest_; }
  const MemSlots& memslots() const { return slots_; }
  const VmTimings& timings() const { return timings_; }
  KvmVcpu& vcpu() { return vcpu_; }
  TrapBackend backend() const { return backend_; }

 private:
  kvm_regs user_regs_{};  // the guest's CPL3 registers during run()
  Vm() = default;
  // Handles one decoded trap; false once the guest has exited.
  bool handle_trap(const Trap& trap, kvm_regs& user);
  bool is_freeze_fd() const;
  Status finish_clone(const VmSnapshot& snap, const std::vector<std::pair<int, int>>& fds, uint64_t start);
  MemSlots::RegisterFn slot_registrar();
  // A guest #PF at `gpa` in a chunk KVM has no memslot for: map it. False when that failed (the
  // guest is then ended as by SIGKILL, as an out-of-memory kill would).
  bool map_on_fault(uint64_t gpa);
  KvmVm vm_;
  MemSlots slots_;
  KvmVcpu vcpu_;
  Guest guest_;
  TrapBackend backend_ = TrapBackend::kTripleFault;
  VdsoClock vdso_clock_;
  bool vdso_ = false;
  VmTimings timings_;
  uint64_t created_at_ns_ = 0;
  std::atomic<bool> interrupt_requested_{false};
  std::atomic<bool> kill_requested_{false};
  std::atomic<bool> in_run_{false};
  pthread_t vcpu_thread_{};
  int freeze_fd_ = -1;
  uint64_t freeze_dev_ = 0, freeze_ino_ = 0;  // identity of the descriptor behind freeze_fd_
  bool frozen_ = false;
  int pause_fd_ = -1;  // pause_before_read()
  bool paused_ = false;
  bool has_pending_ = false;  // a clone or a paused VM: complete pending_ before the next KVM_RUN
  SyscallArgs pending_;
  kvm_regs pending_user_{};
};

}  // namespace sp::vmm
