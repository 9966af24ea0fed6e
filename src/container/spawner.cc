// The spawner and reaper threads of a custom-container pool (see spawner.h).
#include "container/spawner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "container/layer.h"
#include "util/log.h"

namespace sp::container {
namespace {

// Host ids of container sandboxes: a range of 65536 per slot, far above the process tier's
// (2,000,000 + 2 per slot) and any real account. Slots are process-wide: pools never share one.
constexpr uint32_t kHostIdBase = 1u << 28;
constexpr uint32_t kMaxSlots = 4096;  // 2^28 ids

class SlotTable {
 public:
  static SlotTable& get() {
    static SlotTable t;
    return t;
  }
  // The lowest free slot, so that a spawner's cached id-mapping namespaces are reused (a slot
  // is freed only once every process of its previous sandbox is gone).
  bool alloc(uint32_t* slot) {
    std::lock_guard<std::mutex> g(mu_);
    for (uint32_t s = 0; s < kMaxSlots; ++s) {
      if (!used_[s]) {
        used_[s] = true;
        *slot = s;
        return true;
      }
    }
    return false;
  }
  void free(uint32_t slot) {
    std::lock_guard<std::mutex> g(mu_);
    used_[slot % kMaxSlots] = false;
  }

 private:
  std::mutex mu_;
  bool used_[kMaxSlots] = {};
};

std::string describe(const Error& e) { return e.message(); }

// Names of layer directories and cgroups: unique in the process, across every pool's spawner
// (several pools share a store and the owner directory; a pool may be re-created by name).
std::atomic<uint64_t> g_layer_seq{0};

}  // namespace

std::string describe_exit(const std::string& status_line, bool oom_killed) {
  if (oom_killed) return "killed: out of memory";
  const std::string& t = status_line;
  if (t.compare(0, 5, "exit ") == 0) return "container exited with status " + std::to_string(std::atoi(t.c_str() + 5));
  if (t.compare(0, 7, "signal ") == 0) {
    int sig = std::atoi(t.c_str() + 7);
    const char* name = sigabbrev_np(sig);
    return "container killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "container init was killed";
}

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

struct ContainerSpawner::Impl {
  SpawnConfig cfg;
  WakeFn wake = nullptr;
  void* ctx = nullptr;
  Spawner spawner;
  CgroupManager cgroups;
  MountPlan plan;          // the child's plan; source 0 set per sandbox
  std::string owner_dir;   // run_dir/<owner tag>

  std::mutex mu;
  std::condition_variable spawn_cv, reap_cv;
  uint32_t requests = 0;
  std::deque<Spawned> done;
  std::deque<Spawned> corpses;
  BusyCgroups busy;  // cgroups still busy after remove(): the reaper tries them again every second
  bool stop_spawner = false, stop_reaper = false;
  std::atomic<uint64_t> reaped{0};
  uint64_t next_id = 0;  // spawner thread
  std::unordered_map<uint32_t, UniqueFd> idmaps;  // slot → its id-mapping user namespace (spawner thread)
  UniqueFd dev_null;       // the containers' stdin (and stdout/stderr unless captured)

  std::thread spawner_thread, reaper_thread;

  Impl(Spawner s, CgroupManager c) : spawner(std::move(s)), cgroups(std::move(c)) {}
  void spawner_main();
  void reaper_main();
  Spawned spawn_one();
  void destroy(Spawned& s);
};

Spawned ContainerSpawner::Impl::spawn_one() {
  Spawned out;
  out.id = ++next_id;
  out.started_ns = monotonic_ns();
  if (!SlotTable::get().alloc(&out.slot)) {
    out.error = "no free id range for another container sandbox";
    return out;
  }
  auto fail = [&](const std::string& why) {
    SlotTable::get().free(out.slot);
    out.error = why;
    return std::move(out);
  };
  const uint32_t host_base = kHostIdBase + out.slot * kContainerIdRange;
  // 1. the id mapping, once per slot.
  auto it = idmaps.find(out.slot);
  if (it == idmaps.end()) {
    auto ns = make_idmap_userns(host_base, kContainerIdRange);
    if (!ns.ok()) return fail(describe(ns.error()));
    it = idmaps.emplace(out.slot, std::move(ns).value()).first;
  }
  const uint64_t t_ids = monotonic_ns();
  // 2. the writable layer over the image.
  const std::string seq = std::to_string(g_layer_seq.fetch_add(1, std::memory_order_relaxed) + 1);
  const std::string dir = owner_dir + "/" + seq;
  auto root = mount_writable_root(dir, cfg.image_rootfs, it->second.get(), host_base, cfg.data_bytes);
  if (!root.ok()) {
    remove_layer_dir(dir);
    return fail(describe(root.error()));
  }
  const uint64_t t_layer = monotonic_ns();
  // 3. cgroup, then the sandbox itself.
  auto cg = cgroups.create("c" + seq + "-" + cfg.pool, cfg.limits);
  if (!cg.ok()) {
    remove_layer_dir(dir);
    return fail(describe(cg.error()));
  }
  out.cgroup = std::move(cg).value();
  const uint64_t t_cgroup = monotonic_ns();
  MountPlan plan_copy = plan;
  set_root_source(plan_copy, root.value());
  SandboxSpec spec;
  spec.plan = &plan_copy;
  spec.mounts.data_bytes = cfg.data_bytes;
  spec.slot = out.slot;
  spec.id_range = kContainerIdRange;
  spec.host_id_base = host_base;
  spec.uid = cfg.launch.uid;
  spec.gid = cfg.launch.gid;
  spec.stdio_fd = dev_null.get();
  UniqueFd output_w;
  if (cfg.capture_output) {
    // Its stdout and stderr: the loop thread reads and logs them at a limited rate (log_lines.h).
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
      int err = errno;
      remove_layer_dir(dir);
      (void)out.cgroup.remove();
      return fail(std::string("pipe2 for the container's output: ") + strerror(err));
    }
    out.output.reset(p[0]);
    output_w.reset(p[1]);
    spec.output_fd = p[1];
  }
  spec.argv = cfg.launch.argv;
  spec.env = cfg.launch.env;
  auto proc = spawner.spawn(spec, out.cgroup);
  output_w.reset();  // the child has its copy (or is gone): EOF comes when the container's last writer ends
  // The child holds its own copy of the overlay mount (or is gone): the host's goes now.
  remove_layer_dir(dir);
  if (!proc.ok()) {
    (void)out.cgroup.remove();
    return fail(describe(proc.error()));
  }
  out.proc = std::move(proc).value();
  out.spawned_ns = monotonic_ns();
  if (out.output) (void)fcntl(out.output.get(), F_SETFL, O_NONBLOCK);
  LOG_DEBUG("pool %s: container %llu spawned in %.2f ms (id map %.2f, layer %.2f, cgroup %.2f, clone to exec %.2f)",
            cfg.pool.c_str(), static_cast<unsigned long long>(out.id), (out.spawned_ns - out.started_ns) / 1e6,
            (t_ids - out.started_ns) / 1e6, (t_layer - t_ids) / 1e6, (t_cgroup - t_layer) / 1e6,
            (out.spawned_ns - t_cgroup) / 1e6);
  // 4. the network namespace, for probes and upstream connections. The pid cannot be reused
  //    before we reap it, so /proc/<pid> is this sandbox's init (or its zombie: then ENOENT).
  out.netns.reset(open(("/proc/" + std::to_string(out.proc.pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!out.netns) {
    // Already gone (its command exited at once): say how, from init's status line.
    std::string why = "open sandbox netns: " + std::string(strerror(errno));
    std::string status;
    char buf[64];
    ssize_t n;
    while ((n = read(out.proc.status_fd.get(), buf, sizeof buf)) > 0 && status.size() < 64)
      status.append(buf, static_cast<size_t>(n));
    if (!status.empty()) why = describe_exit(status, out.cgroup.oom_kills() > 0) + " before its startup probe passed";
    destroy(out);
    out.error = why;
    return out;
  }
  return out;
}

// Kills a sandbox, waits for its init, removes its cgroup, frees its slot. Reaper (or spawner on
// a failed spawn).
void ContainerSpawner::Impl::destroy(Spawned& s) {
  if (s.proc.pidfd) {
    // SAFETY: pidfd_send_signal on our own child's pidfd; the pid cannot have been reused.
    syscall(SYS_pidfd_send_signal, s.proc.pidfd.get(), SIGKILL, nullptr, 0);
    // Our init is pid 1 of the sandbox's pid namespace: the kernel kills the rest of it and waits
    // for them before init's exit completes. So wait for that first, then kill what the cgroup
    // still lists (nothing, normally; on cgroup v1 that kill re-reads the list until it is empty).
    siginfo_t si;
    while (waitid(P_PIDFD, static_cast<id_t>(s.proc.pidfd.get()), &si, WEXITED) != 0 && errno == EINTR) {
    }
  }
  if (s.cgroup.valid()) (void)s.cgroup.kill();
  if (s.cgroup.valid()) {
    // Tasks leave the cgroup shortly after their pid 1 is reaped (remove() waits ≈ 0.5 s for it);
    // one still busy then is tried again later, not held here.
    Status st = s.cgroup.remove();
    if (!st.ok() && st.error().code == EBUSY) {
      busy.add(std::move(s.cgroup));
    } else if (!st.ok()) {
      LOG_WARN("container cgroup %s: %s", s.cgroup.name().c_str(), st.error().message().c_str());
    }
  }
  s.proc = SandboxProcess{};
  s.netns.reset();
  SlotTable::get().free(s.slot);
}

void ContainerSpawner::Impl::spawner_main() {
  for (;;) {
    {
      std::unique_lock<std::mutex> g(mu);
      spawn_cv.wait(g, [&] { return stop_spawner || requests > 0; });
      if (stop_spawner) return;
    }
    Spawned s = spawn_one();
    if (!s.ok()) LOG_WARN("pool %s: container spawn failed: %s", cfg.pool.c_str(), s.error.c_str());
    {
      std::lock_guard<std::mutex> g(mu);
      if (requests > 0) --requests;
      done.push_back(std::move(s));
    }
    if (wake) wake(ctx);
  }
}

void ContainerSpawner::Impl::reaper_main() {
  for (;;) {
    Spawned s;
    bool have = false;
    {
      std::unique_lock<std::mutex> g(mu);
      auto woken = [&] { return stop_reaper || !corpses.empty(); };
      if (busy.size()) {
        reap_cv.wait_for(g, std::chrono::seconds(1), woken);
      } else {
        reap_cv.wait(g, woken);
      }
      if (corpses.empty() && stop_reaper) return;  // nothing left
      if (!corpses.empty()) {
        s = std::move(corpses.front());
        corpses.pop_front();
        have = true;
      }
    }
    if (busy.size()) busy.retry();
    if (!have) continue;  // the retry's wake-up
    destroy(s);
    reaped.fetch_add(1, std::memory_order_relaxed);
  }
}

Result<std::unique_ptr<ContainerSpawner>> ContainerSpawner::start(SpawnConfig cfg, WakeFn wake, void* ctx) {
  SP_TRY_ASSIGN(Spawner spawner, Spawner::create(cfg.init_path));
  // Our own binary is dynamic: inside an image's rootfs it cannot find its libraries, and every
  // container would die at once (seen as "open sandbox netns: ENOENT"). Say so at pool creation.
  if (!spawner.static_init())
    return Error{ENOENT, "custom containers need the static sandpool-init beside the sandpool binary (built with it)"};
  SP_TRY_ASSIGN(CgroupManager cgroups, CgroupManager::open());
  cgroups.reclaim_stale();
  if (mkdir(cfg.run_dir.c_str(), 0711) != 0 && errno != EEXIST) return errno_error("mkdir container run dir");
  chmod(cfg.run_dir.c_str(), 0711);
  reclaim_run_dirs(cfg.run_dir);
  auto impl = std::make_unique<Impl>(std::move(spawner), std::move(cgroups));
  impl->owner_dir = cfg.run_dir + "/" + owner_tag(getpid());
  if (mkdir(impl->owner_dir.c_str(), 0711) != 0 && errno != EEXIST) return errno_error("mkdir container run dir");
  chmod(impl->owner_dir.c_str(), 0711);
  SP_TRY_ASSIGN(impl->plan, build_container_plan(cfg.launch));
  impl->dev_null.reset(open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!impl->dev_null) return errno_error("open /dev/null");
  impl->cfg = std::move(cfg);
  impl->wake = wake;
  impl->ctx = ctx;
  Impl* raw = impl.get();
  impl->spawner_thread = std::thread([raw] { raw->spawner_main(); });
  impl->reaper_thread = std::thread([raw] { raw->reaper_main(); });
  return std::unique_ptr<ContainerSpawner>(new ContainerSpawner(std::move(impl)));
}

ContainerSpawner::ContainerSpawner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ContainerSpawner::~ContainerSpawner() {
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    impl_->stop_spawner = true;
  }
  impl_->spawn_cv.notify_all();
  // Its exit SIGKILLs (PDEATHSIG) every sandbox still alive; the reaper then collects them.
  impl_->spawner_thread.join();
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    while (!impl_->done.empty()) {
      if (impl_->done.front().ok()) impl_->corpses.push_back(std::move(impl_->done.front()));
      impl_->done.pop_front();
    }
    impl_->stop_reaper = true;
  }
  impl_->reap_cv.notify_all();
  impl_->reaper_thread.join();
  impl_->busy.retry_for(2000);
  // owner_dir is shared by every container pool of this process: not removed here (another pool
  // may still spawn into it); the next start's reclaim_run_dirs removes it with the dead run.
  // The owner cgroup directories go with the process's last cgroup manager.
  impl_->cgroups.remove_owner_dirs();
}

void ContainerSpawner::request(uint32_t n) {
  if (n == 0) return;
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    impl_->requests += n;
  }
  impl_->spawn_cv.notify_one();
}

std::vector<Spawned> ContainerSpawner::take() {
  std::vector<Spawned> out;
  std::lock_guard<std::mutex> g(impl_->mu);
  while (!impl_->done.empty()) {
    out.push_back(std::move(impl_->done.front()));
    impl_->done.pop_front();
  }
  return out;
}

void ContainerSpawner::give_back(Spawned&& s) {
  {
    std::lock_guard<std::mutex> g(impl_->mu);
    impl_->corpses.push_back(std::move(s));
  }
  impl_->reap_cv.notify_one();
}

uint64_t ContainerSpawner::reaped() const { return impl_->reaped.load(std::memory_order_relaxed); }

uint32_t ContainerSpawner::requested() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->requests + static_cast<uint32_t>(impl_->done.size());
}

}  // namespace sp::container
