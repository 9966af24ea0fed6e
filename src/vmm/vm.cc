// VM creation and the vCPU run loop: KVM_RUN, decode the trap, run the syscall or deliver the
// signal, resume.
#include "vmm/vm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <unistd.h>

#include <climits>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <utility>

#include "util/log.h"
#include "vmm/loader.h"
#include "vmm/syscalls/async_io.h"
#include "vmm/syscalls/dispatch.h"
#include "vmm/syscalls/signal.h"
#include "vmm/x86.h"

namespace sp::vmm {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Result<Kvm*> shared_kvm() {
  static Result<Kvm> kvm = Kvm::open();
  if (!kvm.ok()) return kvm.error();
  return &kvm.value();
}

namespace {

std::string resolve_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  for (const char* dir : {"/usr/local/bin/", "/usr/bin/", "/bin/"}) {
    std::string p = std::string(dir) + name;
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return name;
}

}  // namespace

Result<std::unique_ptr<Vm>> Vm::create(const VmConfig& cfg) {
  install_process_signals();
  std::unique_ptr<Vm> vm(new Vm());
  vm->created_at_ns_ = now_ns();
  vm->backend_ = cfg.backend;
  SP_TRY_ASSIGN(Kvm * kvm, shared_kvm());
  SP_TRY_ASSIGN(vm->vm_, kvm->create_vm());
  // Only a VM that can freeze is ever snapshotted (its memfd goes to the clones); any other runs
  // faster on huge pages (GuestMemory::Backing).
  SP_TRY_ASSIGN(vm->guest_.mem, GuestMemory::create(cfg.memory_bytes, cfg.freeze_on_read_fd >= 0
                                                                          ? GuestMemory::Backing::kMemfd
                                                                          : GuestMemory::Backing::kAnonymousHuge,
                                                            cfg.memory_dir_fd));
  Guest& g = vm->guest_;
  SP_TRY(build_system_area(g.mem, cfg.backend));
  vm->slots_ = MemSlots(g.mem.size());
  SP_TRY(vm->slots_.map_chunk(0, g.mem, vm->slot_registrar()));  // the system area; the rest on first touch
  SP_TRY_ASSIGN(vm->vcpu_, vm->vm_.create_vcpu(0));
  vm->timings_.create_ns = now_ns() - vm->created_at_ns_;

  uint64_t t1 = now_ns();
  LoadRequest req;
  req.path = resolve_program(cfg.program);
  req.argv = cfg.argv.empty() ? std::vector<std::string>{cfg.program} : cfg.argv;
  req.envp = cfg.envp;
  // SAFETY: fills the 16-byte array it is given.
  if (getrandom(req.random.data(), req.random.size(), 0) != static_cast<ssize_t>(req.random.size()))
    return errno_error("getrandom");
  req.hwcap = host_hwcap();
  g.uid = static_cast<int>(getuid());
  g.gid = static_cast<int>(getgid());
  req.uid = static_cast<uint32_t>(g.uid);
  if (cfg.vdso) {
    SP_TRY_ASSIGN(req.sysinfo_ehdr, install_vdso(g.mem, g.as));
    vm->vdso_clock_ = calibrate_vdso_clock(vm->vcpu_);
    vm->vdso_ = true;
  }
  req.gid = static_cast<uint32_t>(g.gid);
  SP_TRY_ASSIGN(LoadedProgram lp, load_program(g.mem, g.as, req));
  unmap_huge_page(g.mem, lp.guard);  // a stack overflow faults instead of running into mmap memory
  vm->slots_.keep_unmapped(lp.guard);
  // A program touches the top of memory first (its stack, then the mmap window below the guard):
  // one memslot for the top two chunks now instead of two first-touch faults and two memslot ioctls
  // during the run (python3 -c 'print(1)': -2.6 ms wall; a program that never uses its stack pays
  // ≈ 0.5 ms more).
  uint64_t top = g.mem.size(), low = top > 2 * MemSlots::kChunkBytes ? top - 2 * MemSlots::kChunkBytes : 0;
  SP_TRY(vm->slots_.map_chunks(low, top, g.mem, vm->slot_registrar()));
  SP_TRY(init_vcpu(vm->vcpu_, kvm->supported_cpuid(), cfg.backend, g.mem.size(), lp.start_rip, lp.start_rsp));
  g.brk_start = g.brk_cur = lp.brk_start;
  // /proc/self/exe is absolute on Linux (glibc's $ORIGIN handling asserts it).
  char abs_path[PATH_MAX];
  g.exe_path = realpath(req.path.c_str(), abs_path) ? abs_path : req.path;
  g.pid = 2;
  g.trace = cfg.trace;
  for (const auto& [guest_fd, host_fd] : cfg.fds) {
    // SAFETY: duplicates a descriptor the caller lends; the copy is owned by the guest's fd table.
    UniqueFd copy(fcntl(host_fd, F_DUPFD_CLOEXEC, 3));
    if (!copy) return errno_error("dup guest descriptor");
    SP_TRY(g.fds.install_at(guest_fd, std::move(copy)));
  }
  if (cfg.freeze_on_read_fd >= 0) {
    struct stat st;
    int h = g.fds.host(cfg.freeze_on_read_fd);
    if (h < 0 || fstat(h, &st) != 0) return Error{EINVAL, "freeze_on_read_fd is not one of the configured fds"};
    vm->freeze_fd_ = cfg.freeze_on_read_fd;
    vm->freeze_dev_ = st.st_dev;
    vm->freeze_ino_ = st.st_ino;
  }
  vm->timings_.load_ns = now_ns() - t1;
  global_counters().vms_started.fetch_add(1, std::memory_order_relaxed);
  return vm;
}

namespace {
void on_kick_signal(int) {}  // only there to make KVM_RUN and blocking calls return EINTR
}  // namespace

int Vm::kick_signal() { return kick_signal_number(); }

// Once per process: the kick handler (no SA_RESTART, so interrupted calls return EINTR), and
// SIGPIPE / SIGXFSZ ignored: a guest writing to a closed pipe or past RLIMIT_FSIZE (which also
// bounds the guest memfd) must get EPIPE / EFBIG and its own signal, not kill the VMM.
void install_process_signals() {
  static const bool done = [] {
    struct sigaction sa {};
    sa.sa_handler = on_kick_signal;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    return sigaction(Vm::kick_signal(), &sa, nullptr) == 0;
  }();
  (void)done;
}

void Vm::interrupt() {
  interrupt_requested_.store(true, std::memory_order_release);
  vcpu_.kick();
  // SAFETY: pthread_kill is async-signal-safe; vcpu_thread_ is only read while run() is active.
  if (in_run_.load(std::memory_order_acquire) && !pthread_equal(pthread_self(), vcpu_thread_))
    pthread_kill(vcpu_thread_, kick_signal());
}

void Vm::kill() {
  kill_requested_.store(true, std::memory_order_release);
  interrupt();
}

MemSlots::RegisterFn Vm::slot_registrar() {
  return [this](uint32_t slot, uint64_t gpa, uint64_t bytes) {
    return vm_.set_memory(slot, gpa, bytes, guest_.mem.host_base() + gpa);
  };
}

bool Vm::map_on_fault(uint64_t gpa) {
  ++timings_.memslot_faults;
  Status st = slots_.map_chunk(gpa, guest_.mem, slot_registrar());
  if (st.ok()) return true;
  LOG_ERROR("vm: guest memory at 0x%llx could not be given to KVM (%s); ending the guest",
            static_cast<unsigned long long>(gpa), st.error().message().c_str());
  return false;
}

bool Vm::is_freeze_fd() const {
  struct stat st;
  int h = guest_.fds.host(freeze_fd_);
  return h >= 0 && fstat(h, &st) == 0 && st.st_dev == freeze_dev_ && st.st_ino == freeze_ino_;
}

bool Vm::handle_trap(const Trap& trap, kvm_regs& user) {
  Guest& g = guest_;
  switch (trap.kind) {
    case Trap::Kind::kSyscall: {
      SyscallArgs args;
      args.nr = user.rax;
      args.a[0] = user.rdi, args.a[1] = user.rsi, args.a[2] = user.rdx;
      args.a[3] = user.r10, args.a[4] = user.r8, args.a[5] = user.r9;
      if (freeze_fd_ >= 0 && args.nr == 0 && args.a[0] == static_cast<uint64_t>(freeze_fd_) && is_freeze_fd()) {
        frozen_ = true;  // leave the read for the clones
        pending_ = args;
        pending_user_ = user;
        return false;
      }
      const bool reads = args.nr == SYS_read || args.nr == SYS_recvfrom || args.nr == SYS_recvmsg;
      if (pause_fd_ >= 0 && reads && args.a[0] == static_cast<uint64_t>(pause_fd_)) {
        pause_fd_ = -1;
        paused_ = true;
        has_pending_ = true;  // made by the next run()
        pending_ = args;
        pending_user_ = user;
        return false;
      }
      int64_t r = dispatch_syscall(g, args);
      if (r != kNoReturnValue) user.rax = static_cast<uint64_t>(r);
      break;
    }
    case Trap::Kind::kException: {
      // A first touch of memory KVM has no memslot for yet: map it and retry the instruction.
      if (trap.vector == kPageFaultVector && slots_.wants_fault(trap.cr2)) {
        if (map_on_fault(trap.cr2)) break;
        g.exited = true;
        g.term_signal = SIGKILL;
        g.exit_code = 128 + SIGKILL;
        global_counters().guests_killed.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      global_counters().exceptions.fetch_add(1, std::memory_order_relaxed);
      SignalInfo info = signal_for_exception(trap.vector, trap.error_code, trap.cr2);
      if (g.trace)
        LOG_INFO("vm: exception %u error 0x%x cr2 0x%llx at rip 0x%llx -> signal %d", trap.vector, trap.error_code,
                 static_cast<unsigned long long>(trap.cr2), static_cast<unsigned long long>(user.rip), info.signo);
      deliver_signal(g, info);
      if (g.exited)
        LOG_INFO("vm: guest killed by signal %d (cpu exception %u, error 0x%x, cr2 0x%llx, rip 0x%llx)", g.term_signal,
                 trap.vector, trap.error_code, static_cast<unsigned long long>(trap.cr2),
                 static_cast<unsigned long long>(user.rip));
      break;
    }
    case Trap::Kind::kInterrupted:
    case Trap::Kind::kFatal: break;
  }
  if (kill_requested_.load(std::memory_order_acquire) && !g.exited) {
    g.exited = true;
    g.term_signal = SIGKILL;
    g.exit_code = 128 + SIGKILL;
    global_counters().guests_killed.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (interrupt_requested_.exchange(false, std::memory_order_acq_rel)) g.sig.pending |= 1ull << (SIGINT - 1);
  if (take_io_ready() && !g.async_fds.empty()) g.sig.pending |= 1ull << (SIGIO - 1);
  if (!g.exited && (trap.kind != Trap::Kind::kInterrupted || trap.at_user)) deliver_pending(g);
  if (g.exited) return false;
  if (vdso_) refresh_vdso(g.mem, vdso_clock_);
  resume_user(backend_, vcpu_.run_area(), g.mem, trap, user);
  return true;
}

Result<VmExit> Vm::run() {
  uint64_t start = now_ns();
  kvm_run* run = vcpu_.run_area();
  // The user registers live in the Vm (not on this frame) because guest_ keeps a pointer to them.
  user_regs_ = kvm_regs{};
  kvm_regs& user = user_regs_;
  Guest& g = guest_;
  g.run = run;
  g.host_interrupt = &interrupt_requested_;  // set here: a clone's Guest came from its template's
  g.host_kill = &kill_requested_;
  g.vcpu = &vcpu_;
  g.regs = &user_regs_;
  if (frozen_) return Error{EINVAL, "run of a frozen VM"};
  install_process_signals();
  vcpu_thread_ = pthread_self();
  in_run_.store(true, std::memory_order_release);
  struct InRunReset {
    std::atomic<bool>& flag;
    ~InRunReset() { flag.store(false, std::memory_order_release); }
  } in_run_reset{in_run_};
  attach_async_io(g, run);
  struct AsyncReset {
    ~AsyncReset() { detach_async_io(); }
  } async_reset;
  if (vdso_) refresh_vdso(g.mem, vdso_clock_);
  bool running = true;
  paused_ = false;
  if (has_pending_) {  // a clone: finish the template's frozen syscall with our descriptors (or a
                       // paused VM its own pending read)
    has_pending_ = false;
    Trap t;
    t.kind = Trap::Kind::kSyscall;
    user = pending_user_;
    user.rax = pending_.nr;
    int pause = std::exchange(pause_fd_, -1);  // the pause is for the guest's next read, not this one
    running = handle_trap(t, user);
    pause_fd_ = pause;
  }
  bool first = true;
  while (running) {
    uint64_t entered = now_ns();
    Status st = vcpu_.run();
    timings_.kvm_run_ns += now_ns() - entered;
    ++timings_.exits;
    bool interrupted = false;
    if (!st.ok()) {
      if (st.error().code != EINTR && st.error().code != EAGAIN) return st.error();
      interrupted = true;
    }
    if (first && !interrupted) {
      timings_.first_exit_ns = now_ns() - created_at_ns_;
      first = false;
    }
    Trap trap = decode_trap(backend_, run, g.mem, interrupted, &user);
    if (trap.kind == Trap::Kind::kFatal) {
      LOG_ERROR("vm: %s (exit reason %u, rip 0x%llx, cs 0x%x)", trap.what, run->exit_reason,
                static_cast<unsigned long long>(run->s.regs.regs.rip), run->s.regs.sregs.cs.selector);
      return Error{kEProtocol, trap.what};
    }
    running = handle_trap(trap, user);
  }
  timings_.run_ns = now_ns() - start;
  g.regs = nullptr;
  VmExit ex{g.exit_code, g.term_signal, g.syscall_count, g.unknown_syscalls};
  ex.frozen = frozen_;
  ex.paused = paused_;
  return ex;
}

}  // namespace sp::vmm
