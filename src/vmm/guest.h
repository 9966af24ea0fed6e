// The guest process as the VMM's syscall handlers see it: memory, address space, descriptors,
// brk, signal dispositions, identity and counters. Owned by a Vm; touched only on its vCPU thread.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vmm/address_space.h"
#include "vmm/fd_table.h"
#include "vmm/kvm.h"
#include "vmm/memory.h"

namespace sp::vmm {

// Process-wide counters for the server's /metrics; updated with relaxed atomics by every VM.
struct VmCounters {
  std::atomic<uint64_t> vms_started{0};
  std::atomic<uint64_t> syscalls{0};
  std::atomic<uint64_t> unknown_syscalls{0};  // answered ENOSYS (not implemented)
  std::atomic<uint64_t> refused_syscalls{0};  // threads, fork, exec: implemented as a clear error
  std::atomic<uint64_t> exceptions{0};        // CPU exceptions raised by guests
  std::atomic<uint64_t> signals_delivered{0};
  std::atomic<uint64_t> guests_killed{0};     // ended by a signal's default action
};
VmCounters& global_counters();

struct SigAction {
  uint64_t handler = 0;  // 0 = SIG_DFL, 1 = SIG_IGN, else a guest address
  uint64_t flags = 0;
  uint64_t restorer = 0;
  uint64_t mask = 0;
};

struct SignalState {
  std::array<SigAction, 65> actions{};  // index = signal number 1..64
  uint64_t blocked = 0;                 // bit (sig-1)
  uint64_t pending = 0;                 // asynchronous signals waiting for delivery (SIGINT)
  uint64_t altstack_sp = 0, altstack_size = 0;
  int altstack_flags = 2;               // SS_DISABLE
};

struct Guest {
  GuestMemory mem;
  AddressSpace as;
  FdTable fds;
  SignalState sig;
  uint64_t brk_start = 0, brk_cur = 0;
  std::string exe_path;  // what /proc/self/exe reads as
  int pid = 1, uid = 0, gid = 0;
  bool trace = false;

  // Set while a trap is handled: the guest's user registers (handlers may rewrite them) and the
  // vCPU, for fs base and XSAVE state.
  kvm_regs* regs = nullptr;
  kvm_run* run = nullptr;
  KvmVcpu* vcpu = nullptr;

  // The Vm's interrupt and kill requests (set from other threads; the run loop turns them into
  // SIGINT or the end after the current trap): a blocking call sees them (signal_waiting).
  const std::atomic<bool>* host_interrupt = nullptr;
  const std::atomic<bool>* host_kill = nullptr;

  // Exit: set by exit_group or a fatal signal; the run loop stops when `exited` is set.
  bool exited = false;
  int exit_code = 0;
  int term_signal = 0;

  // Descriptors with O_ASYNC: the host delivers kIoSignal to the vCPU thread when they become
  // ready, and the run loop turns that into SIGIO for the guest (syscalls/async_io.cc).
  std::vector<int> async_fds;
  int async_owner = 0;  // F_SETOWN value, reported by F_GETOWN

  // FPU/vector states saved at signal delivery, restored by rt_sigreturn (innermost last, bounded).
  std::vector<std::unique_ptr<kvm_xsave>> saved_fpu;

  uint64_t syscall_count = 0;
  uint64_t unknown_syscalls = 0;
  std::array<uint32_t, 512> syscall_histogram{};

  void set_fs_base(uint64_t base) {
    run->s.regs.sregs.fs.base = base;
    run->kvm_dirty_regs |= KVM_SYNC_X86_SREGS;
  }
};

}  // namespace sp::vmm
