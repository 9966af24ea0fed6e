// Freezing a VM into a VmSnapshot and cloning VMs from it (copy-on-write memory, restored vCPU).
// SAFETY (whole file): the only raw calls are fcntl(F_DUPFD_CLOEXEC) on descriptors this process
// owns; each result goes straight into a UniqueFd.
#include "vmm/snapshot.h"

#include <fcntl.h>

#include "vmm/vm.h"
#include "vmm/x86.h"

namespace sp::vmm {

Result<std::unique_ptr<VmSnapshot>> Vm::snapshot() {
  if (!frozen_) return Error{EINVAL, "snapshot of a VM that is not frozen"};
  if (backend_ != TrapBackend::kTripleFault) return Error{ENOTSUP, "snapshot needs the triple-fault backend"};
  if (guest_.mem.memfd() < 0) return Error{EINVAL, "snapshot of a VM without a memfd"};
  auto snap = std::make_unique<VmSnapshot>();
  Guest& g = guest_;
  snap->memfd = UniqueFd(fcntl(g.mem.memfd(), F_DUPFD_CLOEXEC, 3));
  if (!snap->memfd) return errno_error("dup guest memfd");
  snap->memory_bytes = g.mem.size();
  snap->slots = slots_;
  snap->backend = backend_;
  snap->vdso = vdso_;
  snap->vdso_clock = vdso_clock_;
  snap->sregs = vcpu_.run_area()->s.regs.sregs;
  snap->user = pending_user_;
  snap->pending = pending_;
  snap->xsave = std::make_unique<kvm_xsave>();
  SP_TRY(vcpu_.get_xsave(snap->xsave.get()));
  snap->as = g.as;
  snap->sig = g.sig;
  snap->brk_start = g.brk_start;
  snap->brk_cur = g.brk_cur;
  snap->exe_path = g.exe_path;
  snap->pid = g.pid, snap->uid = g.uid, snap->gid = g.gid;
  snap->async_fds = g.async_fds;
  snap->async_owner = g.async_owner;
  for (int fd = 0; fd < FdTable::kMaxFds; ++fd) {
    int h = g.fds.host(fd);
    if (h < 0) continue;
    UniqueFd copy(fcntl(h, F_DUPFD_CLOEXEC, 3));
    if (!copy) return errno_error("dup template descriptor");
    snap->fds.emplace_back(fd, std::move(copy));
  }
  return snap;
}

Status Vm::attach_fd(int guest_fd, int host_fd) {
  UniqueFd copy(fcntl(host_fd, F_DUPFD_CLOEXEC, 3));
  if (!copy) return errno_error("dup guest descriptor");
  return guest_.fds.install_at(guest_fd, std::move(copy));
}

// Guest process state of a fresh clone; descriptors duplicated, then the clone's own ones on top.
static Status restore_guest(Guest& g, const VmSnapshot& snap) {
  g.as = snap.as;
  g.sig = snap.sig;
  g.brk_start = snap.brk_start;
  g.brk_cur = snap.brk_cur;
  g.exe_path = snap.exe_path;
  g.pid = snap.pid, g.uid = snap.uid, g.gid = snap.gid;
  g.async_fds = snap.async_fds;  // re-pointed at the clone's thread by run()
  g.async_owner = snap.async_owner;
  for (const auto& [guest_fd, host] : snap.fds) {
    UniqueFd copy(fcntl(host.get(), F_DUPFD_CLOEXEC, 3));
    if (!copy) return errno_error("dup template descriptor");
    SP_TRY(g.fds.install_at(guest_fd, std::move(copy)));
  }
  return {};
}

Status Vm::finish_clone(const VmSnapshot& snap, const std::vector<std::pair<int, int>>& fds, uint64_t start) {
  for (const auto& [guest_fd, host_fd] : fds) SP_TRY(attach_fd(guest_fd, host_fd));
  vdso_ = snap.vdso;
  vdso_clock_ = snap.vdso_clock;
  frozen_ = false;
  freeze_fd_ = -1;
  has_pending_ = true;  // the frozen syscall is completed by the first run()
  pending_ = snap.pending;
  pending_user_ = snap.user;
  interrupt_requested_.store(false);
  timings_ = VmTimings{};
  created_at_ns_ = start;
  timings_.clone_ns = now_ns() - start;
  global_counters().vms_started.fetch_add(1, std::memory_order_relaxed);
  return {};
}

Result<std::unique_ptr<Vm>> Vm::clone(const VmSnapshot& snap, const std::vector<std::pair<int, int>>& fds) {
  install_process_signals();
  std::unique_ptr<Vm> vm(new Vm());
  vm->created_at_ns_ = now_ns();
  vm->backend_ = snap.backend;
  SP_TRY_ASSIGN(Kvm * kvm, shared_kvm());
  // 1. memory: a private (CoW) view of the template's pages.
  Guest& g = vm->guest_;
  SP_TRY_ASSIGN(g.mem, GuestMemory::map_private(snap.memfd.get(), snap.memory_bytes));
  // 2. VM, the template's memslots (one per run of chunks it used), vCPU with the template's state.
  SP_TRY_ASSIGN(vm->vm_, kvm->create_vm());
  vm->slots_ = snap.slots;
  SP_TRY(vm->slots_.register_all(vm->slot_registrar()));
  SP_TRY_ASSIGN(vm->vcpu_, vm->vm_.create_vcpu(0));
  SP_TRY(restore_vcpu(vm->vcpu_, kvm->supported_cpuid(), snap.backend, snap.sregs, snap.xsave.get()));
  vm->vcpu_.run_area()->s.regs.sregs = snap.sregs;  // what handlers read before the first exit
  // 3. process state, the clone's descriptors, the pending syscall.
  SP_TRY(restore_guest(g, snap));
  SP_TRY(vm->finish_clone(snap, fds, vm->created_at_ns_));
  return vm;
}

}  // namespace sp::vmm
