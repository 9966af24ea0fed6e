// A frozen VM: guest memory (the template's memfd, never written again), the vCPU state and the
// guest process state, stopped at a syscall that each clone completes with its own descriptors.
// Not a file format: a snapshot lives in the process that made it and is cloned in-process.
#pragma once

#include <linux/kvm.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "util/unique_fd.h"
#include "vmm/address_space.h"
#include "vmm/guest.h"
#include "vmm/memslots.h"
#include "vmm/syscalls/dispatch.h"
#include "vmm/trap.h"
#include "vmm/vdso.h"

namespace sp::vmm {

struct VmSnapshot {
  UniqueFd memfd;
  uint64_t memory_bytes = 0;
  MemSlots slots;  // the chunks the template had given KVM (present in its page tables)
  TrapBackend backend = TrapBackend::kTripleFault;
  bool vdso = false;
  VdsoClock vdso_clock;

  // vCPU: segment/control state, user registers at the pending syscall (rip = return address),
  // the syscall itself, and the FPU/vector state.
  kvm_sregs sregs{};
  kvm_regs user{};
  SyscallArgs pending;
  std::unique_ptr<kvm_xsave> xsave;

  // Guest process state. Descriptors are duplicates, shared by every clone (and their offsets).
  AddressSpace as;
  SignalState sig;
  uint64_t brk_start = 0, brk_cur = 0;
  std::string exe_path;
  int pid = 2, uid = 0, gid = 0;
  std::vector<std::pair<int, UniqueFd>> fds;
  std::vector<int> async_fds;
  int async_owner = 0;
};

}  // namespace sp::vmm
