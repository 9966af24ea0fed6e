// `sandpool vmm-template`: the micro-VM tier's pool template, started by PoolSpawner in place of
// template.py with PoolTemplateConfig::direct_spares (template.py's start and reply layout; the
// requests themselves go to the children). It builds one template VM (Python + the agent,
// preloaded, frozen before the agent's first read of its control descriptor), and keeps one small
// VMM child forked ahead (a spare) that has already cloned the VM copy-on-write and run its guest
// (the template's agent, no session input) up to where it needs its session; it offers the spare
// to the spawner, which sends it its request, and once that child is ready forks and offers the
// next one. The child then isolates itself like a process-tier clone (cgroups, namespaces, scratch
// mounts, unprivileged host uid, no capabilities, the VMM's own seccomp filter) and lets the guest
// go on with the session's socket as guest fd 3. Nothing of the session reaches the guest before the isolation.
// The child also plays the agent supervisor's part (deadlines, restart after a death); see
// src/vmm/README.md "Pools".
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cli.h"
#include "sandbox/caps.h"
#include "sandbox/child_report.h"
#include "sandbox/mounts.h"
#include "sandbox/net.h"
#include "sandbox/userns.h"
#include "util/log.h"
#include "vmm/layout.h"
#include "vmm/pool_template.h"
#include "vmm/vm.h"

namespace sp::vmm {
namespace {

constexpr const char* kAgentDirInside = "/opt/sandpool/agent";
constexpr int kGuestAgentFd = 3;
constexpr int kGuestCtlFd = 4;

// The agent's shared page (sandpool_agent.py SHARED): seq, running, rid, deadline, start, armed,
// limit, out_base, err_base.
constexpr size_t kPageBytes = 72;
constexpr size_t kRunningOff = 8, kDeadlineOff = 24, kArmedOff = 40;
constexpr uint64_t kRunCell = 1;
constexpr uint32_t kReasonInitial = 0, kReasonTimeout = 1, kReasonCrashed = 2;
constexpr int kExitEof = 0, kExitProtocol = 3, kExitGaveUp = 4;

struct Args {
  int ctrl_fd = 3;
  pid_t parent = 0;
  uint64_t data_bytes = 256ull << 20, tmp_bytes = 64ull << 20;
  std::string agent_path, preload;
  uint64_t vm_memory = 1ull << 30;
  uint64_t grace_ms = 2000;
  bool offer_spares = false;  // --offer-spares 1 (required): PoolTemplateConfig::direct_spares
};

// Template state, inherited (copy-on-write) by every forked child.
struct TemplateState {
  Args args;
  int own_pidns = -1;
  int template_pidfd = -1;
  MountPlan* scratch = nullptr;
  RlimitSet rlimits;
  // The VMM policy in two (pool_template.h): the spare loads `filter` before its request, the
  // child `lock` at the end of its isolation.
  SeccompProgram filter, lock;
  VmSnapshot* snap = nullptr;
  int pagemap = -1;  // /proc/self/pagemap, open from template_init until record_written_pages()
  int memory_dir = -1;  // a detached tmpfs (huge=always) for the template VM's memory, or -1
  // Guest ranges [start, end) a clone's guest writes while it runs ahead (a probe clone's, see
  // record_written_pages()); each spare makes its copies of them before its guest runs.
  std::vector<std::pair<uint64_t, uint64_t>> written;
};
TemplateState g;

struct CloneRequest {
  uint32_t uid = 0, gid = 0;
  int agent_fd = -1, report_fd = -1, netns_fd = -1;
  int cgroup_fds[4] = {-1, -1, -1, -1};
};

uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);  // SAFETY: callers pass 8 readable bytes (a frame or a page copy)
  return v;
}

// Makes the calling thread alone (raw system calls: libc's wrappers would change every thread)
// sandpool's watcher user, with no supplementary groups and no capabilities. Returns 0 or an errno.
// That id is just below the sandboxes' range and no account's: the host's nobody (65534), which
// it was, may run other services, and any process with that uid could signal (stop, kill) the
// thread, and with it the session's VMM.
int drop_own_ids() {
  constexpr unsigned kWatcherId = kHostIdBase - 1;
  if (syscall(SYS_setgroups, 0, nullptr) != 0) return errno;
  if (syscall(SYS_setresgid, kWatcherId, kWatcherId, kWatcherId) != 0) return errno;
  if (syscall(SYS_setresuid, kWatcherId, kWatcherId, kWatcherId) != 0) return errno;
  return clear_caps_in_child();  // (the uid change emptied them; the inheritable set too)
}

// Reads the agent's page in guest memory and enforces its deadline: SIGINT into the guest at the
// deadline, kill after the grace period. One per VMM child; the VM pointer changes on a restart.
class Watcher {
 public:
  // (Made before its thread starts: the debug switch is read here, not on every wake.)
  explicit Watcher(int ctl_fd, uint64_t grace_ns)
      : ctl_(ctl_fd), grace_ns_(grace_ns), debug_(getenv("SANDPOOL_VMM_DEBUG") != nullptr) {}

  void attach(Vm* vm) {
    std::lock_guard<std::mutex> l(mu_);
    vm_ = vm;
    page_ = 0;
    killed_ = interrupted_ = false;
    seq_ = ~0ull;
    parse_.clear();
  }
  // Detaches the VM (before it is destroyed); returns its page and whether we killed it.
  bool detach(uint8_t* page_out) {
    std::lock_guard<std::mutex> l(mu_);
    std::memset(page_out, 0, kPageBytes);
    if (vm_ && page_) {
      const uint8_t* p = vm_->guest().mem.user_ptr(page_, kPageBytes);
      if (p) std::memcpy(page_out, p, kPageBytes);  // SAFETY: checked guest range; the guest has stopped
    }
    vm_ = nullptr;
    return killed_;
  }
  // Starts the thread as the watcher user (drop_own_ids) with no capabilities (the spare's, before its request:
  // the sandbox's ids are not known yet). The thread drops its own ids first; returns 0 once it
  // has, or the errno of the step that failed (the thread then exits).
  int start_unprivileged() {
    thread_ = std::thread([this] {
      tid_ = gettid();
      int e = drop_own_ids();
      started_.store(e, std::memory_order_release);
      started_.notify_one();
      if (e == 0) loop();
    });
    started_.wait(-1, std::memory_order_acquire);
    int e = started_.load(std::memory_order_acquire);
    if (e != 0) thread_.join();
    return e;
  }
  pid_t tid() const { return tid_; }  // start_unprivileged()'s thread

 private:
  void loop() {
    int64_t wake_ms = -1;
    for (;;) {
      pollfd p{ctl_, POLLIN, 0};
      int n = poll(&p, 1, static_cast<int>(wake_ms));
      if (n < 0 && errno != EINTR) _exit(kExitProtocol);
      if (n > 0) {
        uint8_t buf[512];
        ssize_t r = read(ctl_, buf, sizeof buf);
        if (r == 0) _exit(kExitEof);
        if (r > 0) feed(buf, static_cast<size_t>(r));
      }
      wake_ms = check();
      if (debug_) {  // once a second: cells run and guest syscalls so far
        wake_ms = wake_ms < 0 ? 1000 : std::min<int64_t>(wake_ms, 1000);
        std::lock_guard<std::mutex> l(mu_);
        const uint8_t* p = vm_ && page_ ? vm_->guest().mem.user_ptr(page_, kPageBytes) : nullptr;
        if (p) std::fprintf(stderr, "vmm: %llu cells, %llu guest syscalls\n", static_cast<unsigned long long>(load_u64(p)),
                            static_cast<unsigned long long>(vm_->guest().syscall_count));
      }
    }
  }
  void feed(const uint8_t* b, size_t n) {
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i = 0; i < n; ++i) {
      if (!parse_.empty() || b[i] == 'A') {
        parse_.push_back(b[i]);
        if (parse_.size() == 9) {
          uint64_t addr = load_u64(parse_.data() + 1);
          // An unaligned or out-of-range page is ignored (no deadlines: the server's last-resort
          // timer still ends such a session); only the agent itself registers one.
          page_ = addr % 8 == 0 && vm_ && vm_->guest().mem.user_ptr(addr, kPageBytes) ? addr : 0;
          parse_.clear();
        }
      } else if (debug_ && vm_) {  // a nudge (one per cell): check() runs after every read
        std::fprintf(stderr, "vmm: cell start, guest syscalls so far %llu\n",
                     static_cast<unsigned long long>(vm_->guest().syscall_count));
      }
    }
  }
  // Returns the poll timeout until the next action, -1 for none.
  int64_t check() {
    std::lock_guard<std::mutex> l(mu_);
    if (!vm_ || !page_ || killed_) return -1;
    uint8_t* p = vm_->guest().mem.user_ptr(page_, kPageBytes);
    if (!p) return -1;
    // SAFETY: p is a checked guest range of kPageBytes, 8-aligned (checked at registration); the
    // guest writes these words concurrently (plain stores), hence atomic loads and one store.
    auto* word = reinterpret_cast<std::atomic<uint64_t>*>(p);
    uint64_t seq = word[0].load(std::memory_order_acquire);
    uint64_t running = word[kRunningOff / 8].load(std::memory_order_acquire);
    int64_t deadline = static_cast<int64_t>(word[kDeadlineOff / 8].load(std::memory_order_acquire));
    int64_t now = static_cast<int64_t>(now_ns());
    int64_t wake = now + 60'000'000'000ll;
    if (running == kRunCell) {
      if (seq != seq_) {
        seq_ = seq;
        interrupted_ = false;
      }
      if (!interrupted_ && now >= deadline) {
        vm_->interrupt();
        interrupted_ = true;
        hard_ns_ = now + static_cast<int64_t>(grace_ns_);
      }
      if (interrupted_ && now >= hard_ns_) {
        vm_->kill();
        killed_ = true;
        return -1;
      }
      wake = interrupted_ ? hard_ns_ : deadline;
    }
    word[kArmedOff / 8].store(static_cast<uint64_t>(wake), std::memory_order_release);
    // The deadline is guest memory: clamp, so no value can make poll() spin or never wake.
    int64_t ms = (wake - now + 999'999) / 1'000'000;
    return std::clamp<int64_t>(ms, 0, 60'000);
  }

  int ctl_;
  uint64_t grace_ns_;
  const bool debug_;  // SANDPOOL_VMM_DEBUG: log cells and guest syscalls
  pid_t tid_ = -1;
  std::atomic<int> started_{-1};  // start_unprivileged(): -1 until the thread has dropped its ids
  std::mutex mu_;
  Vm* vm_ = nullptr;
  uint64_t page_ = 0;
  uint64_t seq_ = ~0ull;
  bool interrupted_ = false, killed_ = false;
  int64_t hard_ns_ = 0;
  std::vector<uint8_t> parse_;
  std::thread thread_;
};

// The request-independent part of the child's isolation, done by the spare before its request:
// its own mount, IPC, UTS and network namespaces (loopback only) with the fresh scratch mounts
// (/tmp, /mnt/data, /proc of its pid namespace), hostname, rlimits, the capability bounding set
// (effective capabilities stay until isolate()). Returns 0, or the failing step with *err; the
// spare reports it once its request brings the report pipe.
uint32_t isolate_ahead(int* err) {
  auto failed = [err](uint32_t step, int e) {
    *err = e;
    return step;
  };
  uint32_t idx = 0;
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET) != 0) return failed(kStepNetNs, errno);
  if (int e = loopback_up_in_child()) return failed(kStepLoopback, e);
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return failed(kStepMountPrivate, errno);
  if (int e = run_mount_plan_in_child(*g.scratch, &idx)) return failed(kStepMountOps | (idx << 8), e);
  if (sethostname("sandbox", 7) != 0) return failed(kStepHostname, errno);
  if (int e = apply_rlimits_in_child(g.rlimits)) return failed(kStepRlimits, e);
  if (int e = drop_bounding_set_in_child()) return failed(kStepCapsBounding, e);
  if (setgroups(0, nullptr) != 0) return failed(kStepUserIds, errno);
  return 0;
}

// The rest of the isolation, at the request, in the order of template_clone.cc's isolate():
// cgroups first (what the child allocates from here on is the sandbox's), the cgroup namespace,
// /mnt/data for the sandbox's uid, ids, capabilities; fails via sp_child_fail. A network namespace
// sent with the request is not used: the spare made its own ahead (micro-VM pools ask for none,
// microvm_source.cc), so that the watcher thread, started ahead, is in it too.
void isolate(const CloneRequest& r) {
  const int report = r.report_fd;
  int err;
  for (int fd : r.cgroup_fds) {
    if (fd < 0) continue;
    if (write(fd, "0", 1) != 1) sp_child_fail(report, kStepJoinCgroup, errno);
    close(fd);
  }
  if (r.netns_fd >= 0) close(r.netns_fd);
  if (unshare(CLONE_NEWCGROUP) != 0) sp_child_fail(report, kStepCgroupNs, errno);
  if (chown("/mnt/data", r.uid, r.gid) != 0) sp_child_fail(report, kStepMountOps, errno);
  if (chdir("/mnt/data") != 0) sp_child_fail(report, kStepPivotRoot, errno);
  // Raw system calls: this thread only. A watcher started ahead has dropped its own ids already
  // (libc's wrappers would stop it and wait for it to do the same: ≈ 50 µs each here).
  // Supplementary groups were cleared ahead; leaving uid 0 empties the permitted, effective and
  // ambient capabilities (the setuid fixup, locked on); clear_caps_in_child() does the rest.
  if (syscall(SYS_setresgid, r.gid, r.gid, r.gid) != 0) sp_child_fail(report, kStepUserIds, errno);
  if (syscall(SYS_setresuid, r.uid, r.uid, r.uid) != 0) sp_child_fail(report, kStepUserIds, errno);
  if ((err = clear_caps_in_child())) sp_child_fail(report, kStepCapsClear, err);
  if ((err = set_no_new_privs_in_child())) sp_child_fail(report, kStepNoNewPrivs, err);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) sp_child_fail(report, kStepParentDeath, errno);
  pollfd pfd{g.template_pidfd, POLLIN, 0};
  if (poll(&pfd, 1, 0) != 0) _exit(SP_CHILD_SETUP_FAILED);
  close(g.template_pidfd);
}

// What a VMM child makes before its request arrives: the request-independent isolation, its
// descriptors, the VM clone, and the start of its guest: the agent, told by its GO record to go
// ahead, makes everything that needs neither the session's socket nor the session's isolation
// (signals, descriptors, root, reseeding, its warm-up cell) and pauses at its next read of the
// control socket; so none of it is on the request's path. The guest is the template's own agent
// code: nothing from a session reaches it before the isolation (it has no fd 3 yet), and until the
// request it runs as the template's VM does. Memory allocated here (KVM's VM, vCPU and shadow
// pages, the guest's copied pages) is charged to the template's cgroup, where the spare is (the
// child joins the sandbox's at its request; charges stay where they were made); everything the
// guest grows later (new memslots, shadow pages, copied pages) is charged to the sandbox.
struct ChildPrep {
  uint32_t ahead_step = 0;  // isolate_ahead()'s failing step, 0 when it succeeded
  int ahead_err = 0;
  int devnull = -1, out = -1, errf = -1, ctl[2] = {-1, -1};
  std::unique_ptr<Vm> vm;  // null when the clone failed (clone_err)
  // Started by the spare (its thread start is not on the request's path; the filter loaded ahead
  // allows no new thread). It shares the spare's namespaces made ahead and runs as the watcher
  // user (kHostIdBase - 1) without capabilities (Watcher::start_unprivileged); at the request the seccomp
  // filter and no_new_privs reach it through TSYNC. Only the cgroup namespace, made at the
  // request, stays the template's for it (its /proc/thread-self/cgroup shows the full path).
  uint32_t watcher_step = 0;  // the step that failed starting it or loading the filter, and its errno
  int watcher_err = 0;
  std::unique_ptr<Watcher> watcher;
  int clone_err = 0;
  uint64_t clone_ns = 0;
  uint64_t populate_ns = 0;      // copying the pages the guest will write (TemplateState::written)
  uint64_t guest_ahead_ns = 0;  // that and GO -> the guest's pause (vm is null when it did not pause)
  uint64_t made_ns = 0;         // the spare's fork -> all of the above done
  uint64_t ahead_pf_fixed = 0, ahead_exits = 0;  // SANDPOOL_VMM_DEBUG: KVM's shadow faults fixed, KVM_RUN returns
};

// GO record: restarts, reason, the dead guest's end, its page, flags (sandpool_agent.py GO).
constexpr uint32_t kGoAhead = 1;  // go ahead without the session; wait for it at the next read of fd 4
bool send_go(int ctl, uint32_t restarts, uint32_t reason, int32_t term_signal, int32_t exit_code,
             const uint8_t* page, uint32_t flags) {
  uint8_t go[16 + kPageBytes + 4];
  std::memcpy(go, &restarts, 4);
  std::memcpy(go + 4, &reason, 4);
  std::memcpy(go + 8, &term_signal, 4);
  std::memcpy(go + 12, &exit_code, 4);
  std::memcpy(go + 16, page, kPageBytes);
  std::memcpy(go + 16 + kPageBytes, &flags, 4);
  return write(ctl, go, sizeof go) == static_cast<ssize_t>(sizeof go);
}

// Clones the VM and runs its guest ahead to its pause (p's descriptors made here); p.vm stays
// null when the clone failed (p.clone_err) or the guest did not pause.
void clone_ahead(ChildPrep& p) {
  p.devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  p.out = memfd_create("sandpool-stdout", MFD_CLOEXEC);
  p.errf = memfd_create("sandpool-stderr", MFD_CLOEXEC);
  if (p.devnull < 0 || p.out < 0 || p.errf < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p.ctl) != 0) {
    p.clone_err = errno;
    return;
  }
  // Guest fd 3 is /dev/null until the session's socket replaces it: held, so that no descriptor
  // the guest opens ahead gets that number.
  auto vm = Vm::clone(*g.snap, {{0, p.devnull}, {1, p.out}, {2, p.errf}, {kGuestAgentFd, p.devnull}, {kGuestCtlFd, p.ctl[1]}});
  if (!vm.ok()) {
    p.clone_err = vm.error().code;
    return;
  }
  p.clone_ns = vm.value()->timings().clone_ns;
  p.vm = std::move(vm.value());
  const uint8_t no_page[kPageBytes] = {};
  bool paused = false;
  uint64_t t0 = now_ns();
  // The pages the guest is going to write, copied in one call each range instead of one shadow
  // fault (and a host copy-on-write fault) per page; as writable host pages, KVM can also map
  // their neighbours with each fault.
  uint8_t* host = p.vm->guest().mem.host_base();
  for (const auto& [start, end] : g.written) {
    // SAFETY: [start, end) lies inside this clone's guest mapping (record_written_pages() kept only
    // ranges below the guest size, the same for every clone of the snapshot). Advisory only.
    (void)madvise(host + start, end - start, MADV_POPULATE_WRITE);
  }
  p.populate_ns = now_ns() - t0;
  if (send_go(p.ctl[0], 0, kReasonInitial, 0, 0, no_page, kGoAhead)) {
    p.vm->pause_before_read(kGuestCtlFd);
    auto ex = p.vm->run();
    paused = ex.ok() && ex.value().paused;
  }
  p.guest_ahead_ns = now_ns() - t0;
  if (getenv("SANDPOOL_VMM_DEBUG") && paused) {
    if (auto k = p.vm->vcpu().stats({"pf_fixed"}); k.ok()) p.ahead_pf_fixed = k.value()[0];
    p.ahead_exits = p.vm->timings().exits;
  }
  if (!paused) {  // it ended (it should not): the request clones again, as after a guest death,
    p.vm.reset();  // with a fresh control socket (this one may hold what the dead guest wrote)
    close(p.ctl[0]), close(p.ctl[1]);
    p.ctl[0] = p.ctl[1] = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p.ctl) != 0) p.clone_err = errno;
  }
}

ChildPrep prepare_child() {
  ChildPrep p;
  if ((p.ahead_step = isolate_ahead(&p.ahead_err))) return p;
  clone_ahead(p);
  // The guest that ran ahead has already registered its page (buffered on ctl[0]): the watcher
  // must know its VM before it reads that. (Without one, clone_main() attaches the VM it makes.)
  p.watcher = std::make_unique<Watcher>(p.ctl[0], g.args.grace_ms * 1'000'000ull);
  if (p.vm) p.watcher->attach(p.vm.get());
  if (int e = p.watcher->start_unprivileged()) {
    p.watcher_step = kStepUserIds;
    p.watcher_err = e;
    return p;
  }
  // The VMM filter with the calls the isolation still makes at the request (g.filter), loaded here:
  // the kernel's work to attach a filter (its action cache, its JIT) is not on the request's path,
  // which loads only the small lock. TSYNC: the watcher too. (Privileged: no no_new_privs yet.)
  sock_fprog prog = g.filter.prog();
  // SAFETY: raw seccomp(2) with a program compiled by libseccomp.
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0) {
    p.watcher_step = kStepSeccomp;
    p.watcher_err = errno;
  }
  return p;
}

// Which guest pages a clone writes while it runs ahead: a probe clone, run ahead here in the
// template, and the pages of its guest mapping that became anonymous (copied on write) in
// /proc/self/pagemap. The agent's path to its pause does the same in every clone, so each spare
// copies exactly these pages (that it would copy anyway) before its guest runs.
void record_written_pages() {
  UniqueFd pagemap(std::exchange(g.pagemap, -1));
  if (!pagemap) return;
  ChildPrep p;
  clone_ahead(p);
  if (p.vm) {
    const uint8_t* host = p.vm->guest().mem.host_base();
    const uint64_t size = p.vm->guest().mem.size();
    constexpr uint64_t kPresent = 1ull << 63, kFileOrShared = 1ull << 61;
    std::vector<uint64_t> entries(16384);
    const uint64_t base = reinterpret_cast<uintptr_t>(host) / kPageSize;
    for (uint64_t page = kUserBase / kPageSize; page < size / kPageSize;) {
      uint64_t n = std::min<uint64_t>(entries.size(), size / kPageSize - page);
      ssize_t got = pread(pagemap.get(), entries.data(), n * 8, static_cast<off_t>((base + page) * 8));
      if (got <= 0) break;
      for (uint64_t i = 0; i < static_cast<uint64_t>(got) / 8; ++i) {
        if ((entries[i] & kPresent) == 0 || (entries[i] & kFileOrShared) != 0) continue;
        uint64_t gpa = (page + i) * kPageSize;
        if (!g.written.empty() && g.written.back().second == gpa) g.written.back().second += kPageSize;
        else g.written.emplace_back(gpa, gpa + kPageSize);
      }
      page += static_cast<uint64_t>(got) / 8;
    }
  }
  uint64_t pages = 0, huge = 0, last_huge = ~0ull;
  for (const auto& [start, end] : g.written) {
    pages += (end - start) / kPageSize;
    for (uint64_t h = start / kHugePage; h <= (end - 1) / kHugePage; ++h) {
      if (h != last_huge) ++huge;
      last_huge = h;
    }
  }
  LOG_INFO("vmm-template: a clone's guest writes %llu pages (%zu ranges, in %llu of the 2 MiB pages) before its session",
           static_cast<unsigned long long>(pages), g.written.size(), static_cast<unsigned long long>(huge));
  p.vm.reset();
  for (int fd : {p.devnull, p.out, p.errf, p.ctl[0], p.ctl[1]})
    if (fd >= 0) close(fd);
}

// The VMM child after its request: isolate, seccomp, run the VM made ahead; on a guest death clone
// again (same sandbox, same /mnt/data) and let the new agent answer for the lost cell.
// `spare_sock`: the spare's socket to the template, which gets one byte once the sandbox is ready
// (or EOF if the child dies first) and only then forks the next spare.
[[noreturn]] void clone_main(const CloneRequest& r, ChildPrep prep, uint64_t request_ns, int spare_sock) {
  const int report = r.report_fd;
  {  // out of the spare's background priority (vmm_template_main), both threads
    sched_param none{};
    (void)sched_setscheduler(0, SCHED_OTHER, &none);
    if (prep.watcher && prep.watcher->tid() > 0) (void)sched_setscheduler(prep.watcher->tid(), SCHED_OTHER, &none);
  }
  if (prep.ahead_step) sp_child_fail(report, prep.ahead_step, prep.ahead_err);
  if (prep.watcher_step) sp_child_fail(report, prep.watcher_step, prep.watcher_err);
  isolate(r);
  const uint64_t isolated_ns = now_ns();
  if (!prep.vm && prep.clone_err) sp_child_fail(report, kStepExec, prep.clone_err);
  const int devnull = prep.devnull, out = prep.out, errf = prep.errf;
  int* ctl = prep.ctl;
  const bool debug = getenv("SANDPOOL_VMM_DEBUG") != nullptr;  // keep stderr (the server's log)
  if (!debug) {
    for (int fd = 0; fd < 3; ++fd) dup3(devnull, fd, 0);  // nothing from here reaches the server's log
  }
  std::unique_ptr<Watcher> watcher = std::move(prep.watcher);
  // The lock on the filter loaded ahead: together they are the VMM policy. TSYNC: the watcher gets
  // it, and no_new_privs, too.
  sock_fprog prog = g.lock.prog();
  // SAFETY: raw seccomp(2) with a program compiled by libseccomp.
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
    sp_child_fail(report, kStepSeccomp, errno);
  const uint64_t filtered_ns = now_ns();
  uint32_t restarts = 0, reason = kReasonInitial;
  int32_t term_signal = 0, exit_code = 0;
  uint8_t page[kPageBytes] = {};
  int quick_deaths = 0;
  bool reported = false;
  for (;;) {
    Result<std::unique_ptr<Vm>> vm = Error{EIO, "no VM"};
    const bool ahead = prep.vm != nullptr;
    if (ahead) {  // the first guest ran ahead: it gets the session's socket, then its go-on byte
      Status st = prep.vm->attach_fd(kGuestAgentFd, r.agent_fd);
      if (!st.ok()) sp_child_fail(report, kStepExec, st.error().code);
      vm = std::move(prep.vm);
      if (write(ctl[0], "S", 1) != 1) _exit(kExitProtocol);
    } else {
      vm = Vm::clone(*g.snap, {{0, devnull}, {1, out}, {2, errf}, {kGuestAgentFd, r.agent_fd}, {kGuestCtlFd, ctl[1]}});
      // GO: restarts, reason, the dead guest's end, its page; read by the frozen guest's first read.
      if (vm.ok() && !send_go(ctl[0], restarts, reason, term_signal, exit_code, page, 0)) _exit(kExitProtocol);
    }
    if (!vm.ok()) {
      if (!reported) sp_child_fail(report, kStepExec, vm.error().code);
      _exit(kExitGaveUp);
    }
    if (!ahead) watcher->attach(vm.value().get());  // (the one that ran ahead is attached already)
    Result<VmExit> ex = Error{EIO, "not run"};
    if (!reported) {
      // Ready once the agent has sent its Hello and waits for its first request: the VM stops
      // before its first read of the session socket, the report goes out, and the read is made.
      const uint64_t attached_ns = now_ns();
      vm.value()->pause_before_read(kGuestAgentFd);
      ex = vm.value()->run();
      if (ex.ok() && ex.value().paused) {
        const uint64_t ready_ns = now_ns();
        ChildReport ready{0, 0};
        if (write(report, &ready, sizeof ready) != sizeof ready) _exit(SP_CHILD_SETUP_FAILED);
        close(report);
        reported = true;
        (void)send(spare_sock, "R", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        close(spare_sock);
        // (After the report: the debug lines are not on its path.)
        if (debug && restarts == 0)
          std::fprintf(stderr,
                       "vmm: clone %.3f ms, guest ahead %.3f ms (copies made first %.3f ms; %llu shadow faults fixed, %llu "
                       "exits), spare made in %.3f ms from its fork (before the request); request -> VM ready to run %.3f ms "
                       "(isolation %.3f, seccomp lock %.3f, session socket %.3f); its agent's Hello sent after %.3f ms more\n",
                       static_cast<double>(prep.clone_ns) / 1e6, static_cast<double>(prep.guest_ahead_ns) / 1e6,
                       static_cast<double>(prep.populate_ns) / 1e6,
                       static_cast<unsigned long long>(prep.ahead_pf_fixed), static_cast<unsigned long long>(prep.ahead_exits),
                       static_cast<double>(prep.made_ns) / 1e6, static_cast<double>(attached_ns - request_ns) / 1e6,
                       static_cast<double>(isolated_ns - request_ns) / 1e6, static_cast<double>(filtered_ns - isolated_ns) / 1e6,
                       static_cast<double>(attached_ns - filtered_ns) / 1e6, static_cast<double>(ready_ns - attached_ns) / 1e6);
        else if (debug)
          std::fprintf(stderr, "vmm: clone %.3f ms (restart %u)\n", static_cast<double>(vm.value()->timings().clone_ns) / 1e6,
                       restarts);
        ex = vm.value()->run();
      }
    } else {
      if (debug)
        std::fprintf(stderr, "vmm: clone %.3f ms (restart %u)\n", static_cast<double>(vm.value()->timings().clone_ns) / 1e6,
                     restarts);
      ex = vm.value()->run();
    }
    if (debug && ex.ok())
      std::fprintf(stderr, "vmm: guest exit %d signal %d after %llu syscalls (%llu unknown)\n", ex.value().exit_code,
                   ex.value().term_signal, static_cast<unsigned long long>(ex.value().syscalls),
                   static_cast<unsigned long long>(ex.value().unknown_syscalls));
    bool killed = watcher->detach(page);
    vm.value().reset();
    uint64_t running = load_u64(page + kRunningOff);
    uint64_t cells = load_u64(page);
    if (ex.ok() && !killed && ex.value().term_signal == 0 && running == 0 &&
        (ex.value().exit_code == kExitEof || ex.value().exit_code == kExitProtocol))
      _exit(ex.value().exit_code);
    term_signal = ex.ok() ? ex.value().term_signal : SIGSYS;
    exit_code = ex.ok() ? ex.value().exit_code : 1;
    reason = killed ? kReasonTimeout : kReasonCrashed;
    quick_deaths = cells == 0 ? quick_deaths + 1 : 0;
    if (quick_deaths >= 5) _exit(kExitGaveUp);
    ++restarts;
  }
}

// A tmpfs mounted nowhere (the new mount API's detached mount) with huge pages: the template VM's
// memory file is made there (O_TMPFILE), so that what the template wrote sits in 2 MiB pages and a
// clone maps a 2 MiB page it only reads with one shadow fault. The host's shmem_enabled knob
// ("never" here) does not apply to a tmpfs mounted with huge=always. -1 when it cannot be made:
// the template then uses a memfd (4 KiB pages).
int huge_tmpfs(uint64_t bytes) {
  UniqueFd fs(fsopen("tmpfs", FSOPEN_CLOEXEC));
  if (!fs) return -1;
  const std::string size = std::to_string(bytes);
  if (fsconfig(fs.get(), FSCONFIG_SET_STRING, "huge", "always", 0) != 0 ||
      fsconfig(fs.get(), FSCONFIG_SET_STRING, "size", size.c_str(), 0) != 0 ||
      fsconfig(fs.get(), FSCONFIG_SET_STRING, "mode", "0700", 0) != 0 ||
      fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0)
    return -1;
  return fsmount(fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
}

Status template_init() {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return errno_error("PR_SET_PDEATHSIG");
  if (getppid() != g.args.parent) return Error{ESRCH, "parent gone"};
  g.own_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
  if (g.own_pidns < 0) return errno_error("open own pid ns");
  g.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);  // -1: spares copy nothing ahead
  g.memory_dir = huge_tmpfs(g.args.vm_memory + kHugePage);
  // SAFETY: raw pidfd_open(2) on ourselves (no libc wrapper here); clones poll it to see us die.
  g.template_pidfd = static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));
  if (g.template_pidfd < 0) return errno_error("pidfd_open(self)");
  SP_TRY(shared_kvm());  // /dev/kvm is opened here, before the pivot hides /dev/kvm
  SP_TRY_ASSIGN(g.filter, compile_vmm_ahead_policy());
  SP_TRY_ASSIGN(g.lock, compile_vmm_isolation_lock());
  MountConfig cfg;
  cfg.layer = MountLayer::kBase;
  cfg.privileged = false;
  if (!g.args.agent_path.empty()) cfg.extra_binds.push_back({g.args.agent_path, kAgentDirInside, false});
  SP_TRY_ASSIGN(MountPlan base, build_mount_plan(cfg));
  uint32_t idx = 0;
  int err;
  if (unshare(CLONE_NEWNS) != 0) return errno_error("unshare(NEWNS)");
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return errno_error("make-rprivate");
  if ((err = open_mount_sources_in_child(base, &idx))) return Error{err, "mount sources"};
  if ((err = run_mount_plan_in_child(base, &idx))) return Error{err, "base mounts"};
  if ((err = pivot_in_child(base))) return Error{err, "pivot_root"};
  close_range(kSourceFdBase, kSourceFdBase + kMaxSources - 1, 0);
  cfg.layer = MountLayer::kScratch;
  cfg.data_bytes = g.args.data_bytes;
  cfg.tmp_bytes = g.args.tmp_bytes;
  cfg.extra_binds.clear();
  SP_TRY_ASSIGN(MountPlan scratch, build_mount_plan(cfg));
  g.scratch = new MountPlan(std::move(scratch));
  g.rlimits = default_rlimits(0, 0);
  return {};
}

std::string python_list(const std::string& csv) {
  std::string out = "[";
  size_t start = 0;
  while (start <= csv.size()) {
    size_t end = csv.find(',', start);
    if (end == std::string::npos) end = csv.size();
    std::string name = csv.substr(start, end - start);
    bool ok = !name.empty();
    for (char c : name) ok &= (isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.');
    if (ok) out += "'" + name + "',";
    start = end + 1;
  }
  return out + "]";
}

// matplotlib builds its font cache with a watchdog thread, which a guest cannot start: build it
// natively first (in the template's own /tmp, where the guest's MPLCONFIGDIR points).
void prebuild_matplotlib_cache() {
  if (g.args.preload.find("matplotlib") == std::string::npos) return;
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0), dup2(devnull, 1), dup2(devnull, 2);
    const char* argv[] = {"python3", "-I", "-c", "import matplotlib.font_manager", nullptr};
    const char* envp[] = {"MPLCONFIGDIR=/tmp/.matplotlib", "MPLBACKEND=Agg", "HOME=/tmp", nullptr};
    execve("/usr/bin/python3", const_cast<char**>(argv), const_cast<char**>(envp));
    _exit(127);
  }
  if (pid > 0) waitpid(pid, nullptr, 0);
}

// Boots Python with the agent in a VM until the agent's first read of its control fd; snapshot.
Status build_template_vm() {
  VmConfig cfg;
  cfg.program = "/usr/bin/python3";
  std::string code = "import sys; sys.path.insert(0, '" + std::string(kAgentDirInside) +
                     "'); import sandpool_agent as a; sys.exit(a.serve_single(3, 4, grace_ms=" +
                     std::to_string(g.args.grace_ms) + ", preload=" + python_list(g.args.preload) + "))";
  cfg.argv = {"python3", "-I", "-c", code};
  cfg.envp = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/mnt/data", "TMPDIR=/tmp",
              "MPLBACKEND=Agg", "MPLCONFIGDIR=/tmp/.matplotlib", "XDG_CACHE_HOME=/tmp/.cache",
              "NUMEXPR_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"};
  int a[2], c[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) != 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c) != 0)
    return errno_error("socketpair(template)");
  UniqueFd a0(a[0]), a1(a[1]), c0(c[0]), c1(c[1]);
  UniqueFd devnull(open("/dev/null", O_RDWR | O_CLOEXEC));
  cfg.fds = {{0, devnull.get()}, {1, 2}, {2, 2}, {kGuestAgentFd, a1.get()}, {kGuestCtlFd, c1.get()}};
  cfg.memory_bytes = g.args.vm_memory;
  cfg.freeze_on_read_fd = kGuestCtlFd;
  cfg.memory_dir_fd = g.memory_dir;
  prebuild_matplotlib_cache();
  uint64_t t0 = now_ns();
  SP_TRY_ASSIGN(std::unique_ptr<Vm> vm, Vm::create(cfg));
  SP_TRY_ASSIGN(VmExit ex, vm->run());
  if (!ex.frozen) {
    LOG_ERROR("vmm-template: the template guest exited (status %d) before its first read of fd %d", ex.exit_code,
              kGuestCtlFd);
    return Error{ECHILD, "template guest exited before freezing"};
  }
  SP_TRY_ASSIGN(std::unique_ptr<VmSnapshot> snap, vm->snapshot());
  // The template's stdout/stderr (the server's log) are not for clones: they get their own.
  std::erase_if(snap->fds, [](const auto& e) { return e.first >= 1 && e.first <= kGuestCtlFd; });
  g.snap = snap.release();
  LOG_INFO("vmm-template: template VM ready in %.0f ms (%llu syscalls)", (now_ns() - t0) / 1e6,
           static_cast<unsigned long long>(ex.syscalls));
  return {};
}

bool parse_args(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (i + 1 >= argc) return false;
    const char* v = argv[++i];
    if (k == "--ctrl-fd") a->ctrl_fd = std::atoi(v);
    else if (k == "--parent") a->parent = std::atoi(v);
    else if (k == "--data-bytes") a->data_bytes = std::strtoull(v, nullptr, 10);
    else if (k == "--tmp-bytes") a->tmp_bytes = std::strtoull(v, nullptr, 10);
    else if (k == "--agent-path") a->agent_path = v;
    else if (k == "--preload") a->preload = v;
    else if (k == "--vm-memory-mib") a->vm_memory = std::strtoull(v, nullptr, 10) << 20;
    else if (k == "--grace-ms") a->grace_ms = std::strtoull(v, nullptr, 10);
    else if (k == "--offer-spares") a->offer_spares = std::strcmp(v, "0") != 0;
    else if (k == "--lib") continue;  // template.py's; unused here
    else if (k == "--debug") {
      setenv("SANDPOOL_VMM_DEBUG", v, 1);
      // "seccomp-log": calls outside the VMM filter are allowed and logged by the kernel (audit), not refused.
      if (std::strcmp(v, "seccomp-log") == 0) setenv("SANDPOOL_VMM_SECCOMP_LOG", "1", 1);
    }  // VMM children keep the server's stderr
    else return false;
  }
  return a->parent > 0 && a->offer_spares;
}

void reap_children() {
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

// A reply on the control socket (template.py's layout: generation, pid, errno) with up to two
// descriptors.
bool reply(int ctrl, uint64_t gen, int32_t pid, int32_t err, const int* fds, size_t nfds) {
  struct {
    uint64_t gen;
    int32_t pid, err;
  } __attribute__((packed)) msg{gen, pid, err};
  iovec iov{&msg, sizeof msg};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  char cbuf[CMSG_SPACE(sizeof(int) * 2)] = {};
  if (nfds > 0 && nfds <= 2) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  return sendmsg(ctrl, &mh, MSG_NOSIGNAL) >= 0;
}

// The control message of a clone request (template.py's layout); fds: agent, report, cgroups...,
// then the network namespace when flags & 1.
struct RequestMsg {
  uint64_t gen;
  uint32_t uid, gid, flags;
} __attribute__((packed));

// Receives one request (message and descriptors, close-on-exec); false on EOF or error.
bool recv_request(int sock, RequestMsg* msg, int* fds, int* nfds, ssize_t* got) {
  char cbuf[CMSG_SPACE(sizeof(int) * 8)] = {};
  iovec iov{msg, sizeof *msg};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  *nfds = 0;
  *got = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
  if (*got <= 0) return false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_type != SCM_RIGHTS) continue;
    int n = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    n = std::min(n, 8 - *nfds);
    std::memcpy(fds + *nfds, CMSG_DATA(c), sizeof(int) * static_cast<size_t>(n));
    *nfds += n;
  }
  return true;
}

CloneRequest request_from(const RequestMsg& msg, const int* fds, int nfds) {
  CloneRequest r;
  r.uid = msg.uid;
  r.gid = msg.gid;
  r.agent_fd = fds[0];
  r.report_fd = fds[1];
  int last = nfds;
  if ((msg.flags & 1) && nfds > 2) r.netns_fd = fds[--last];
  for (int i = 2, j = 0; i < last && j < 4; ++i, ++j) r.cgroup_fds[j] = fds[i];
  return r;
}

// A VMM child forked ahead (pid 1 of a new pid namespace), its VM already cloned, waiting on
// `sock` for the request the spawner sends it (the template offered it).
struct Spare {
  pid_t pid = -1;
  int sock = -1;
};

[[noreturn]] void spare_main(int sock, uint64_t forked_ns) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) _exit(SP_CHILD_SETUP_FAILED);
  pollfd dead{g.template_pidfd, POLLIN, 0};
  if (poll(&dead, 1, 0) != 0) _exit(SP_CHILD_SETUP_FAILED);  // the template died before the prctl
  close(g.args.ctrl_fd);
  close(g.own_pidns);
  if (g.memory_dir >= 0) close(g.memory_dir);
  ChildPrep prep = prepare_child();
  prep.made_ns = now_ns() - forked_ns;
  RequestMsg msg{};
  int fds[8];
  int nfds = 0;
  ssize_t got = 0;
  if (!recv_request(sock, &msg, fds, &nfds, &got)) _exit(kExitEof);  // the template went away
  uint64_t request_ns = now_ns();
  if (got != sizeof msg || nfds < 2) _exit(kExitProtocol);  // the spawner's request, malformed: the spawner counts it failed
  clone_main(request_from(msg, fds, nfds), std::move(prep), request_ns, sock);
}

Result<Spare> fork_spare() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return errno_error("socketpair(spare)");
  if (setns(g.own_pidns, CLONE_NEWPID) != 0 || unshare(CLONE_NEWPID) != 0) {
    Error e = errno_error("new pid namespace");
    close(sv[0]), close(sv[1]);
    return e;
  }
  const uint64_t forked_ns = now_ns();
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    spare_main(sv[1], forked_ns);
  }
  Error e = errno_error("fork");
  close(sv[1]);
  if (pid < 0) {
    close(sv[0]);
    return e;
  }
  return Spare{pid, sv[0]};
}

// Offers a spare to the spawner: a reply with generation 0 (the spawner's start at 1), its pid,
// and a pidfd and the template's end of its socket as descriptors. The spawner sends the spare its
// request itself. False when it could not be offered: the caller drops it (a spare nobody knows
// about would wait for a request forever, and no other would be forked).
bool offer(int ctrl, const Spare& spare) {
  // SAFETY: raw pidfd_open(2) on our unreaped child, so the pid cannot have been reused.
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, spare.pid, 0));
  if (pidfd < 0) return false;
  const int fds[2] = {pidfd, spare.sock};
  bool sent = reply(ctrl, 0, spare.pid, 0, fds, 2);
  close(pidfd);
  return sent;
}

void drop_spare(Spare* spare) {
  if (spare->sock >= 0) close(spare->sock);  // a spare still waiting sees EOF and exits
  *spare = Spare{};
}

}  // namespace

int vmm_template_main(int argc, char** argv) {
  if (!parse_args(argc, argv, &g.args)) {
    std::fprintf(stderr, "usage: sandpool vmm-template --ctrl-fd N --parent PID --data-bytes N --tmp-bytes N "
                         "--offer-spares 1 [--agent-path DIR] [--preload a,b] [--vm-memory-mib N] [--grace-ms N] (internal)\n");
    return 2;
  }
  if (Status st = template_init(); !st.ok()) {
    LOG_ERROR("vmm-template: %s", st.error().message().c_str());
    return 1;
  }
  const int ctrl = g.args.ctrl_fd;
  char bpf[1 << 16];
  if (recv(ctrl, bpf, sizeof bpf, 0) <= 0) return 1;  // the process tier's filter: not ours
  if (Status st = build_template_vm(); !st.ok()) {
    LOG_ERROR("vmm-template: template VM: %s", st.error().message().c_str());
    return 1;
  }
  record_written_pages();
  if (send(ctrl, "READY", 5, MSG_NOSIGNAL) != 5) return 1;
  // The template is on no request's path: it and the spares it forks (they inherit it) make their
  // part in the background, SCHED_IDLE, so that the last steps of the child before (its guest's
  // Hello, the spawner's reading of its record) or a session's cell never wait for the next spare's
  // ≈ 20 ms of work; a child leaves SCHED_IDLE when its request comes (clone_main()).
  sched_param idle{};
  if (sched_setscheduler(0, SCHED_IDLE, &idle) != 0) LOG_WARN("vmm-template: SCHED_IDLE refused: %s", strerror(errno));
  // One VMM child is always forked ahead with its VM cloned and its guest run ahead (a spare), and
  // offered to the spawner, which sends it its request. The spare sends one byte on its socket
  // once its sandbox is ready (EOF instead: it died); only then is the next spare forked and
  // offered, so that its start does not compete with that child's last steps. A failed fork is
  // retried a second later.
  Spare spare;
  for (;;) {
    if (spare.pid < 0) {
      if (auto s = fork_spare(); s.ok()) {
        spare = s.value();
        if (!offer(ctrl, spare)) {
          LOG_WARN("vmm-template: a spare could not be offered (%s); forking another", strerror(errno));
          drop_spare(&spare);  // it sees EOF and exits; the next pass, a second later at most, forks again
        }
      }
    }
    pollfd p[2] = {{ctrl, POLLIN, 0}, {spare.sock, POLLIN, 0}};
    int n = poll(p, 2, 1000);
    reap_children();
    if (p[1].revents) drop_spare(&spare);  // ready with its request, or dead: the next one
    if (n <= 0 || !(p[0].revents)) continue;
    RequestMsg msg{};
    int fds[8];
    int nfds = 0;
    ssize_t got = 0;
    if (!recv_request(ctrl, &msg, fds, &nfds, &got)) {
      drop_spare(&spare);
      return 0;  // the spawner went away
    }
    // Requests go to the offered spares, not here (PoolTemplateConfig::direct_spares).
    for (int i = 0; i < nfds; ++i) close(fds[i]);
    reply(ctrl, msg.gen, 0, EINVAL, nullptr, 0);
  }
}

}  // namespace sp::vmm

namespace sp {
int vmm_template_main(int argc, char** argv) { return vmm::vmm_template_main(argc, argv); }
}  // namespace sp
