// The spawner and reaper threads of one pool and the template process they drive (see pool_spawner.h).
#include "sandbox/pool_spawner.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "sandbox/child_report.h"
#include "sandbox/net.h"
#include "sandbox/seccomp_policy.h"
#include "sandbox/userns.h"
#include "util/log.h"
#include "util/ring.h"

namespace sp {
namespace {

// The spawner thread does background work: under SCHED_IDLE it runs only when no thread serving
// requests wants the CPU, and a wake-up of one preempts it at once (a cgroup weight alone leaves
// it its slice). The template it spawns gets the normal policy explicitly (start_template); the
// clones' own start-up is weighted by their cgroup (spawn_cpu_weight). The reaper keeps the normal
// policy: under a saturated CPU, ended sandboxes must still be killed and their memory freed.
void run_in_background(const char* what) {
  sched_param none{};
  if (sched_setscheduler(0, SCHED_IDLE, &none) != 0) {
    LOG_WARN("%s thread: SCHED_IDLE refused (%s); it runs at the normal priority", what, strerror(errno));
  }
}

// The spawner thread's priority while it only waits for a clone's records: normal, so that it wakes
// at once when the record comes (a SCHED_IDLE thread waits for an idle CPU, ≈ 0.3-0.5 ms more for
// a micro-VM clone here, while the clone's guest and the next spare run), and SCHED_IDLE again
// before anything else it does (the next clone's cgroup, namespace, its own bookkeeping).
void set_waiting(bool waiting) {
  sched_param none{};
  (void)sched_setscheduler(0, waiting ? SCHED_OTHER : SCHED_IDLE, &none);
}

constexpr int kTemplateCtrlFd = 3;
constexpr uint64_t kReapHoldMs = 20;  // longest a teardown waits for a fork to end
constexpr int kBusyRetryMs = 1000;     // how often the reaper tries cgroups that were still busy

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool file_exists(const std::string& p) { return access(p.c_str(), R_OK) == 0; }

std::string find_runtime_dir(const std::string& configured) {
  if (!configured.empty()) return configured;
  if (const char* env = getenv("SANDPOOL_RUNTIME_DIR")) return env;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "";
  exe[n] = 0;
  std::string dir(exe);
  dir.resize(dir.rfind('/'));
  // Build tree (build/src/sandpool → build/src/sandbox/), then the installed location.
  for (const std::string& cand : {dir + "/sandbox", std::string(SANDPOOL_LIBDIR), dir + "/../lib/sandpool"}) {
    if (file_exists(cand + "/template.py") && file_exists(cand + "/libsandpool_clone.so")) return cand;
  }
  return "";
}

void drain_eventfd(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof v) == sizeof v) {
  }
}

void kick(int eventfd_fd) {
  uint64_t one = 1;
  ssize_t n = write(eventfd_fd, &one, sizeof one);
  (void)n;
}

// Kills a clone and waits (bounded) for it to be gone, then removes its cgroup. With a
// cpu_weight, its exit (unmapping a copy of the template) first drops to that weight. A cgroup
// still busy after remove()'s retries goes to `busy`, whose owner tries it again later.
void destroy_clone(ReadySandbox& sb, uint32_t cpu_weight, BusyCgroups& busy) {
  sb.agent_fd.reset();
  if (cpu_weight && sb.cgroup.valid()) (void)sb.cgroup.set_cpu_weight(cpu_weight);
  if (sb.pidfd) {
    // The clone is pid 1 of its own pid namespace: the kernel kills the rest of the namespace
    // when it dies and waits for them before pid 1's exit completes, which is when the pidfd
    // polls readable. So sleep on that first; the cgroup's kill, which on cgroup v1 lists and
    // kills tasks until none is left, then finds nothing (it ran first before, and re-read the
    // list of the dying clone for milliseconds on the CPU the next fork needed).
    syscall(SYS_pidfd_send_signal, sb.pidfd.get(), SIGKILL, nullptr, 0);
    pollfd p{sb.pidfd.get(), POLLIN, 0};
    poll(&p, 1, 1000);
  }
  if (sb.cgroup.valid()) (void)sb.cgroup.kill();
  if (sb.cgroup.valid()) {
    Status st = sb.cgroup.remove();
    if (!st.ok() && st.error().code == EBUSY) {
      LOG_INFO("clone %llu cgroup: still busy, tried again later", static_cast<unsigned long long>(sb.generation));
      busy.add(std::move(sb.cgroup));
    } else if (!st.ok()) {
      LOG_WARN("clone %llu cgroup: %s", static_cast<unsigned long long>(sb.generation), st.error().message().c_str());
    }
  }
  sb.pidfd.reset();
}

struct Pending {
  ReadySandbox sb;
  const void* tpl = nullptr;  // the template that forks it
  UniqueFd report_r;
  uint64_t t0 = 0;
  bool have_reply = false;
  bool ready = false;
};

}  // namespace

struct PoolSpawner::Impl {
  PoolTemplateConfig cfg;
  WakeFn on_ready = nullptr;
  void* ctx = nullptr;
  std::string runtime_dir;

  // Spawner thread only (after start).
  CgroupManager mgr;
  SeccompProgram seccomp;
  struct Template {
    UniqueFd ctrl;
    UniqueFd pidfd;
    pid_t pid = -1;
    bool outstanding = false;  // a request was sent, its reply not yet read
    // direct_spares: the child the template offered, not sent a request yet (pid -1: none).
    pid_t offer_pid = -1;
    UniqueFd offer_pidfd, offer_sock;
    void drop_offer() {
      offer_pid = -1;
      offer_pidfd.reset();
      offer_sock.reset();
    }
  };
  std::vector<Template> tpls;  // cfg.templates of them, forking in parallel
  Cgroup tpl_cgroup;
  std::vector<Pending> pending;
  BusyCgroups busy;  // clones' cgroups whose removal is tried again (spawner, reaper, destructor)
  Cgroup spare_cgroup;          // made ahead, off the clone-to-ready path
  uint64_t spare_gen = 0;
  std::vector<UniqueFd> spare_procs;  // its cgroup.procs, opened ahead too (one per hierarchy)
  UniqueFd spare_agent[2], spare_report[2];  // the next clone's socketpair and report pipe, likewise
  UniqueFd spare_netns;         // likewise (lo up); empty if we cannot make one (not root)
  bool netns_ahead;
  bool background_ok = false;  // SCHED_IDLE was granted
  bool waiting = false;        // the thread runs at the normal priority, waiting (set_waiting)
  uint64_t next_gen = 1;
  int backoff_ms = 0;

  std::atomic<pid_t> tpl_pid{-1};
  // Forks requested / ended (the template's reply). Before each teardown the reaper waits
  // (at most kReapHoldMs) for the forks already requested to end: a dying clone's exit
  // (unmapping its copy of the template) and a fork contend for the CPUs and the template's
  // anon_vma locks. Only those forks: under a steady refill the reaper still gets its turn.
  std::atomic<uint64_t> forks_started{0}, forks_ended{0};
  SpscRing<ReadySandbox> ready;
  SpscRing<ReadySandbox> finished;
  UniqueFd spawn_wake, reap_wake;
  std::atomic<bool> stopping{false};
  std::atomic<uint32_t> target{0};
  SpawnerStats stats;
  std::thread spawner, reaper;

  // Start-up handshake between start() and the spawner thread.
  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  Error start_error{};

  explicit Impl(const PoolTemplateConfig& c)
      : cfg(c), netns_ahead(c.netns_ahead), ready(c.ring_capacity), finished(c.ring_capacity) {}

  // Gives a fresh cgroup the background weight of spawns (cfg.spawn_cpu_weight).
  void background(Cgroup& cg) {
    if (cfg.spawn_cpu_weight) (void)cg.set_cpu_weight(cfg.spawn_cpu_weight);
  }
  Status start_template(Template& t);
  void stop_template(Template& t);
  Status send_request(Template& t);
  void prepare_next();
  Status make_spare_channels();
  void on_ctrl(Template& t);
  void on_report(size_t i);
  void finish_failed(Pending& p, Error e);
  void restart_template(Template& t, const char* why);
  int expire_stuck();
  void spawner_main();
  void reaper_main();
  void fork_done() {
    forks_ended.fetch_add(1);
    if (cfg.reap_hold) kick(reap_wake.get());
  }
  void hold_while_forking();
};

Status PoolSpawner::Impl::start_template(Template& t) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return errno_error("socketpair(template)");
  UniqueFd mine(sv[0]), theirs(sv[1]);
  std::string script = runtime_dir + "/template.py", lib = runtime_dir + "/libsandpool_clone.so";
  std::vector<std::string> args = cfg.template_cmd;
  if (args.empty()) args = {cfg.python, "-I", script};
  const std::string program = args[0];
  args.insert(args.end(), {"--ctrl-fd", std::to_string(kTemplateCtrlFd), "--lib", lib, "--parent",
                           std::to_string(getpid()), "--data-bytes", std::to_string(cfg.data_bytes),
                           "--tmp-bytes", std::to_string(cfg.tmp_bytes), "--preload", cfg.preload});
  if (cfg.template_cmd.empty()) args.insert(args.end(), {"--memory", template_memory_name(cfg.memory)});
  if (cfg.host_warms_up && cfg.template_cmd.empty()) args.push_back("--host-warms-up");
  if (!cfg.agent_path.empty()) {
    args.push_back("--agent-path");
    args.push_back(cfg.agent_path);
  }
  if (cfg.direct_spares) args.insert(args.end(), {"--offer-spares", "1"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const char* envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "NUMEXPR_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1",
                        "OMP_NUM_THREADS=1", "MPLBACKEND=Agg", nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, theirs.get(), kTemplateCtrlFd);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  // The template (and every clone it forks) gets the normal policy, not this thread's SCHED_IDLE,
  // which SCHED_RESET_ON_FORK does not undo.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sched_param normal{};
  posix_spawnattr_setschedpolicy(&attr, SCHED_OTHER);
  posix_spawnattr_setschedparam(&attr, &normal);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSCHEDULER);
  pid_t pid = -1;
  // posix_spawn uses CLONE_VFORK: no copy of the server's page tables.
  int rc = posix_spawn(&pid, program.c_str(), &fa, &attr, argv.data(), const_cast<char**>(envp));
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Error{rc, "posix_spawn(template)"};
  t.pid = pid;
  if (tpl_pid.load() < 0) tpl_pid = pid;
  t.pidfd.reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (tpl_cgroup.valid()) (void)tpl_cgroup.add(pid);
  theirs.reset();
  // 1. the seccomp program; 2. wait for READY (imports take ~0.5 s; allow 120 s on a loaded box).
  if (send(mine.get(), seccomp.insns.data(), seccomp.insns.size() * sizeof(sock_filter), MSG_NOSIGNAL) < 0)
    return errno_error("send seccomp to template");
  pollfd p{mine.get(), POLLIN, 0};
  if (poll(&p, 1, 120000) != 1) return Error{ETIMEDOUT, "template start"};
  char buf[16];
  ssize_t n = recv(mine.get(), buf, sizeof buf, 0);
  if (n != 5 || std::memcmp(buf, "READY", 5) != 0) return Error{kEProtocol, "template start (see its stderr)"};
  t.ctrl = std::move(mine);
  return {};
}

void PoolSpawner::Impl::stop_template(Template& t) {
  t.ctrl.reset();  // the template sees EOF and exits; its clones get SIGKILL (PDEATHSIG)
  t.drop_offer();
  if (t.pidfd) {
    syscall(SYS_pidfd_send_signal, t.pidfd.get(), SIGKILL, nullptr, 0);
    siginfo_t si;
    waitid(P_PIDFD, static_cast<id_t>(t.pidfd.get()), &si, WEXITED);
    t.pidfd.reset();
  }
  if (tpl_pid.load() == t.pid) tpl_pid = -1;
  t.pid = -1;
  if (t.outstanding) fork_done();
  t.outstanding = false;
}

Status PoolSpawner::Impl::send_request(Template& t) {
  if (cfg.direct_spares) {
    if (t.offer_pid < 0) return {};  // the template's next offer wakes us
    pollfd dead{t.offer_pidfd.get(), POLLIN, 0};
    if (poll(&dead, 1, 0) != 0) {  // it died while offered: the template offers another
      t.drop_offer();
      return {};
    }
  }
  Pending p;
  p.sb.generation = next_gen++;
  IdMapping ids = id_mapping_for_slot(p.sb.generation);
  uid_t uid = ids.privileged ? ids.host_user_uid : ids.host_root_uid;
  gid_t gid = ids.privileged ? ids.host_user_gid : ids.host_root_gid;
  p.t0 = now_ns();
  std::vector<UniqueFd> cg_fds;
  if (spare_cgroup.valid() && spare_gen == p.sb.generation) {
    p.sb.cgroup = std::move(spare_cgroup);
    cg_fds = std::move(spare_procs);
    spare_procs.clear();
  } else {
    SP_TRY_ASSIGN(p.sb.cgroup, mgr.create(cfg.pool + "-" + std::to_string(p.sb.generation), cfg.limits, false));
    background(p.sb.cgroup);
  }
  p.sb.background = cfg.spawn_cpu_weight != 0;
  if (cg_fds.empty()) {
    SP_TRY_ASSIGN(cg_fds, p.sb.cgroup.open_procs_fds());
  }
  if (!spare_agent[0] || !spare_report[0]) SP_TRY(make_spare_channels());
  p.sb.agent_fd = std::move(spare_agent[0]);
  UniqueFd agent_theirs = std::move(spare_agent[1]);
  p.report_r = std::move(spare_report[0]);
  UniqueFd report_w = std::move(spare_report[1]);

  if (!spare_netns && netns_ahead) {
    auto ns = make_isolated_netns();
    if (ns.ok()) spare_netns = std::move(ns.value());
    else netns_ahead = false;  // clones unshare their own
  }
  UniqueFd netns = std::move(spare_netns);
  struct {
    uint64_t gen;
    uint32_t uid, gid, flags;
  } __attribute__((packed)) msg{p.sb.generation, uid, gid, netns ? 1u : 0u};
  int fds[7] = {agent_theirs.get(), report_w.get()};
  int nfds = 2;
  for (auto& f : cg_fds)
    if (nfds < 6) fds[nfds++] = f.get();
  if (netns) fds[nfds++] = netns.get();
  char cbuf[CMSG_SPACE(sizeof fds)] = {};
  iovec iov{&msg, sizeof msg};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<size_t>(nfds));
  cmsghdr* c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<size_t>(nfds));
  std::memcpy(CMSG_DATA(c), fds, sizeof(int) * static_cast<size_t>(nfds));
  if (cfg.direct_spares) {  // to the offered child itself: no reply from the template
    if (sendmsg(t.offer_sock.get(), &mh, MSG_NOSIGNAL) < 0) {
      Error e = errno_error("send spawn request (offered child)");
      t.drop_offer();
      return e;
    }
    p.have_reply = true;
    p.sb.pid = t.offer_pid;
    p.sb.pidfd = std::move(t.offer_pidfd);
    t.drop_offer();
  } else {
    if (sendmsg(t.ctrl.get(), &mh, MSG_NOSIGNAL) < 0) return errno_error("send spawn request");
    t.outstanding = true;
    forks_started.fetch_add(1);
  }
  p.tpl = &t;
  pending.push_back(std::move(p));
  if (cfg.prepare_next_during_clone) prepare_next();
  return {};
}

// The next clone's socketpair to its agent and its report pipe.
Status PoolSpawner::Impl::make_spare_channels() {
  int sv[2], rp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return errno_error("socketpair(agent)");
  spare_agent[0].reset(sv[0]);
  spare_agent[1].reset(sv[1]);
  if (pipe2(rp, O_CLOEXEC) != 0) return errno_error("pipe2(report)");
  spare_report[0].reset(rp[0]);
  spare_report[1].reset(rp[1]);
  return {};
}

// The next clone's cgroup (mkdir + limits ≈ 0.3 ms) with its cgroup.procs descriptors, network
// namespace (≈ 0.4–0.9 ms), agent socketpair and report pipe (together ≈ 0.2 ms more), made ahead
// so that send_request() only hands them over. A failure here is retried on the request's path.
void PoolSpawner::Impl::prepare_next() {
  if (!spare_cgroup.valid() || spare_gen != next_gen) {
    if (spare_cgroup.valid()) (void)spare_cgroup.remove();
    spare_procs.clear();
    auto spare = mgr.create(cfg.pool + "-" + std::to_string(next_gen), cfg.limits, false);
    if (spare.ok()) {
      spare_cgroup = std::move(spare.value());
      spare_gen = next_gen;
      background(spare_cgroup);
      if (auto fds = spare_cgroup.open_procs_fds(); fds.ok()) spare_procs = std::move(fds.value());
    }
  }
  if (!spare_agent[0] || !spare_report[0]) (void)make_spare_channels();
  if (netns_ahead && !spare_netns) {
    auto ns = make_isolated_netns();
    if (ns.ok()) spare_netns = std::move(ns.value());
  }
}

void PoolSpawner::Impl::finish_failed(Pending& p, Error e) {
  stats.failed++;
  stats.last_error = static_cast<uint64_t>(e.code);
  LOG_WARN("pool %s: clone %llu failed: %s", cfg.pool.c_str(), static_cast<unsigned long long>(p.sb.generation),
           e.message().c_str());
  destroy_clone(p.sb, cfg.spawn_cpu_weight, busy);
  backoff_ms = backoff_ms ? std::min(backoff_ms * 2, 2000) : 10;
}

void PoolSpawner::Impl::restart_template(Template& t, const char* why) {
  LOG_ERROR("pool %s: %s; restarting it", cfg.pool.c_str(), why);
  stop_template(t);
  // Its clones died with it (PDEATHSIG); those of the other templates live on.
  for (size_t i = pending.size(); i-- > 0;) {
    if (pending[i].tpl != &t) continue;
    finish_failed(pending[i], Error{EPIPE, "template died"});
    pending.erase(pending.begin() + static_cast<long>(i));
  }
  if (Status st = start_template(t); !st.ok()) {
    LOG_ERROR("pool %s: template restart: %s", cfg.pool.c_str(), st.error().message().c_str());
    backoff_ms = 2000;
  }
}

// Kills the clones past cfg.clone_timeout_ms and restarts a template that has not answered a
// request within cfg.template_answer_timeout_ms; returns the milliseconds until the next pending
// clone is due for either, or -1 when none is pending.
int PoolSpawner::Impl::expire_stuck() {
  auto limit_ns = [this](const Pending& p) {
    return uint64_t{p.have_reply ? cfg.clone_timeout_ms : cfg.template_answer_timeout_ms} * 1000000ull;
  };
  for (;;) {
    const uint64_t now = now_ns();
    size_t i = 0;
    while (i < pending.size() && now - pending[i].t0 < limit_ns(pending[i])) ++i;
    if (i == pending.size()) break;
    if (!pending[i].have_reply) {
      Template* hung = nullptr;
      for (auto& t : tpls)
        if (&t == pending[i].tpl) hung = &t;
      if (hung) {
        restart_template(*hung, "the template did not answer a spawn request within template_answer_timeout_ms");
        continue;  // (that failed the template's pending clones)
      }
    }
    finish_failed(pending[i], Error{ETIMEDOUT, "clone not ready within clone_timeout_ms"});
    pending.erase(pending.begin() + static_cast<long>(i));
  }
  int next = -1;
  const uint64_t now = now_ns();
  for (const auto& p : pending) {
    const uint64_t due = p.t0 + limit_ns(p);
    int ms = due <= now ? 0 : static_cast<int>(std::min<uint64_t>((due - now + 999999) / 1000000, 1u << 30));
    if (next < 0 || ms < next) next = ms;
  }
  return next;
}

void PoolSpawner::Impl::on_ctrl(Template& t) {
  struct {
    uint64_t gen;
    int32_t pid, err;
    uint64_t fork_ns;
  } __attribute__((packed)) reply{};
  int fds[2] = {-1, -1};
  char cbuf[CMSG_SPACE(sizeof fds)] = {};
  iovec iov{&reply, sizeof reply};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t n = recvmsg(t.ctrl.get(), &mh, MSG_CMSG_CLOEXEC);
  size_t nfds = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_type != SCM_RIGHTS) continue;
    nfds = std::min<size_t>(2, (c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    std::memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
  }
  int pidfd = fds[0];
  if (n > 0 && reply.gen == 0) {  // an offered child (direct_spares): pid, pidfd, its socket
    t.drop_offer();
    if (cfg.direct_spares && reply.pid > 0 && nfds == 2) {
      t.offer_pid = reply.pid;
      t.offer_pidfd.reset(fds[0]);
      t.offer_sock.reset(fds[1]);
    } else {
      for (size_t i = 0; i < nfds; ++i) close(fds[i]);
    }
    return;
  }
  if (nfds == 2) close(fds[1]);
  if (n <= 0) {
    restart_template(t, "template exited");
    return;
  }
  if (t.outstanding) fork_done();
  t.outstanding = false;
  for (size_t i = 0; i < pending.size(); ++i) {
    Pending& p = pending[i];
    if (p.sb.generation != reply.gen || p.have_reply) continue;
    p.have_reply = true;
    if (reply.pid <= 0 || pidfd < 0) {
      if (pidfd >= 0) close(pidfd);
      finish_failed(p, Error{reply.err ? reply.err : EIO, "template fork"});
      pending.erase(pending.begin() + static_cast<long>(i));
      return;
    }
    p.sb.pid = reply.pid;
    p.sb.pidfd.reset(pidfd);
    p.sb.fork_ns = reply.fork_ns;
    if (p.ready) on_report(i);  // the clone was faster than the template's reply
    return;
  }
  if (pidfd >= 0) close(pidfd);
}

void PoolSpawner::Impl::on_report(size_t i) {
  Pending& p = pending[i];
  if (!p.ready) {
    ChildReport r{~0u, 0};
    ssize_t n = read(p.report_r.get(), &r, sizeof r);
    if (n != sizeof r || r.step != 0) {
      Error e = n == sizeof r ? Error{r.err, step_name(r.step)} : Error{EPIPE, "clone died before ready"};
      finish_failed(p, e);
      pending.erase(pending.begin() + static_cast<long>(i));
      return;
    }
    p.ready = true;
    p.report_r.reset();
  }
  if (!p.have_reply) return;
  p.sb.ready_ns = now_ns() - p.t0;
  if (!ready.try_push(std::move(p.sb))) {
    destroy_clone(p.sb, 0, busy);  // cannot happen while target <= capacity; be safe anyway
  } else {
    stats.spawned++;
    backoff_ms = 0;
    if (on_ready) on_ready(ctx);
  }
  if (waiting) {  // the record is taken: the rest is background work
    set_waiting(false);
    waiting = false;
  }
  pending.erase(pending.begin() + static_cast<long>(i));
  if (!cfg.prepare_next_during_clone) prepare_next();  // after the ready record, off its path
}

void PoolSpawner::Impl::spawner_main() {
  Status st;
  {
    auto m = CgroupManager::open();
    if (!m.ok()) st = m.error();
    else mgr = std::move(m.value());
  }
  if (st.ok()) {
    if (int n = mgr.reclaim_stale(); n > 0) LOG_INFO("reclaimed %d sandbox cgroup(s) of an earlier run", n);
    auto prog = compile_seccomp_policy();
    if (!prog.ok()) st = prog.error();
    else seccomp = std::move(prog.value());
  }
  if (st.ok()) {
    CgroupLimits tl;
    tl.memory_bytes = cfg.template_memory_bytes;
    tl.pids_max = 64;
    tl.cpu_millis = 0;
    auto cg = mgr.create("tpl-" + cfg.pool, tl);
    if (!cg.ok()) st = cg.error();
    else tpl_cgroup = std::move(cg.value());
    background(tpl_cgroup);
  }
  tpls.resize(std::max<uint32_t>(1, cfg.templates));
  for (auto& t : tpls)
    if (st.ok()) st = start_template(t);
  {
    std::lock_guard<std::mutex> g(mu);
    started = true;
    if (!st.ok()) start_error = st.error();
  }
  cv.notify_one();
  if (!st.ok()) {
    for (auto& t : tpls) stop_template(t);
    return;
  }
  // From here on only refills (the pool's creation above waits for this thread).
  run_in_background("spawner");
  {
    int policy = sched_getscheduler(0);
    background_ok = policy == SCHED_IDLE;
  }
  std::vector<pollfd> pfds;
  while (!stopping.load()) {
    // Stuck clones and hung templates go first: they may free pending slots for the requests below.
    const int due = expire_stuck();
    bool below = ready.size_approx() + pending.size() < target.load();
    bool sent = false;
    for (auto& t : tpls) {
      if (!below || t.outstanding || !t.ctrl || pending.size() >= cfg.max_pending || backoff_ms != 0) continue;
      if (cfg.direct_spares && t.offer_pid < 0) continue;  // until the template's next offer
      if (Status s = send_request(t); !s.ok()) {
        stats.failed++;
        stats.last_error = static_cast<uint64_t>(s.error().code);
        LOG_WARN("pool %s: spawn request: %s", cfg.pool.c_str(), s.error().message().c_str());
        backoff_ms = 50;
      }
      sent = true;
      break;
    }
    if (sent) continue;
    // [0] wake eventfd, [1..T] template control sockets, then one report pipe per pending clone.
    pfds.clear();
    pfds.push_back({spawn_wake.get(), POLLIN, 0});
    for (auto& t : tpls) pfds.push_back({t.ctrl ? t.ctrl.get() : -1, POLLIN, 0});
    for (auto& p : pending) pfds.push_back({p.report_r ? p.report_r.get() : -1, POLLIN, 0});
    int timeout = below && backoff_ms ? backoff_ms : -1;
    const bool stuck_first = due >= 0 && (timeout < 0 || due < timeout);
    if (stuck_first) timeout = due;
    bool awaited = false;  // a clone whose records are not all in
    for (const auto& p : pending) awaited |= !p.ready || !p.have_reply;
    if (background_ok && awaited != waiting) {
      set_waiting(awaited);
      waiting = awaited;
    }
    int rc = poll(pfds.data(), pfds.size(), timeout);
    if (rc == 0) {
      if (!stuck_first) backoff_ms = 0;  // backoff elapsed: try again (a due clone: expire_stuck, above)
      continue;
    }
    if (rc < 0) continue;
    if (pfds[0].revents) drain_eventfd(spawn_wake.get());
    const size_t base = 1 + tpls.size();
    // Reports first (indices still match `pending`), walking backwards so erasing is safe.
    for (size_t i = pfds.size() - base; i-- > 0;)
      if (pfds[base + i].revents && i < pending.size()) on_report(i);
    for (size_t k = 0; k < tpls.size(); ++k)
      if (pfds[1 + k].revents && tpls[k].ctrl) on_ctrl(tpls[k]);
    if (waiting) {  // back to the background for whatever comes next (the wait is set again above)
      set_waiting(false);
      waiting = false;
    }
  }
  // Templates first: their death takes every clone still isolating (PDEATHSIG), including
  // those whose pid we have not been told yet; then their cgroups can go.
  for (auto& t : tpls) stop_template(t);
  for (auto& p : pending) destroy_clone(p.sb, 0, busy);
  pending.clear();
  if (spare_cgroup.valid()) (void)spare_cgroup.remove();
}

void PoolSpawner::Impl::hold_while_forking() {
  if (!cfg.reap_hold) return;
  const uint64_t until = now_ns() + kReapHoldMs * 1000000ull;
  const uint64_t started = forks_started.load();
  while (forks_ended.load() < started && !stopping.load()) {
    uint64_t now = now_ns();
    if (now >= until) return;
    pollfd p{reap_wake.get(), POLLIN, 0};
    poll(&p, 1, static_cast<int>((until - now) / 1000000ull) + 1);  // fork_done() kicks us
    drain_eventfd(reap_wake.get());
  }
}

void PoolSpawner::Impl::reaper_main() {
  for (;;) {
    while (finished.size_approx() != 0) {
      hold_while_forking();
      auto sb = finished.try_pop();
      if (!sb) break;
      destroy_clone(*sb, cfg.spawn_cpu_weight, busy);
      stats.reaped++;
    }
    if (stopping.load()) break;
    pollfd p{reap_wake.get(), POLLIN, 0};
    poll(&p, 1, busy.size() ? kBusyRetryMs : -1);
    drain_eventfd(reap_wake.get());
    if (busy.size()) busy.retry();
  }
}

Result<std::unique_ptr<PoolSpawner>> PoolSpawner::start(PoolTemplateConfig cfg, WakeFn on_ready, void* ctx) {
  auto impl = std::make_unique<Impl>(cfg);
  impl->on_ready = on_ready;
  impl->ctx = ctx;
  impl->target = std::min(cfg.ready_target, cfg.ring_capacity);
  impl->runtime_dir = find_runtime_dir(cfg.runtime_dir);
  if (impl->runtime_dir.empty()) return Error{ENOENT, "template.py / libsandpool_clone.so not found"};
  impl->spawn_wake.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  impl->reap_wake.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->spawn_wake || !impl->reap_wake) return errno_error("eventfd");
  Impl* raw = impl.get();
  impl->spawner = std::thread([raw] { raw->spawner_main(); });
  {
    std::unique_lock<std::mutex> g(impl->mu);
    impl->cv.wait(g, [&] { return impl->started; });
  }
  if (impl->start_error.code != 0) {
    impl->spawner.join();
    return impl->start_error;
  }
  impl->reaper = std::thread([raw] { raw->reaper_main(); });
  return std::unique_ptr<PoolSpawner>(new PoolSpawner(std::move(impl)));
}

PoolSpawner::PoolSpawner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

bool ReadySandbox::alive() const {
  if (!pidfd) return false;
  pollfd p{pidfd.get(), POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

void ReadySandbox::foreground() {
  if (!background) return;
  background = false;
  if (cgroup.valid()) (void)cgroup.set_cpu_weight(100);
}

PoolSpawner::~PoolSpawner() {
  impl_->stopping = true;
  kick(impl_->spawn_wake.get());
  kick(impl_->reap_wake.get());
  impl_->spawner.join();
  impl_->reaper.join();
  // Both other threads are gone: we may consume the ready ring here.
  while (auto sb = impl_->ready.try_pop()) destroy_clone(*sb, 0, impl_->busy);
  impl_->busy.retry_for(2000);
  if (impl_->tpl_cgroup.valid()) {
    (void)impl_->tpl_cgroup.kill();
    (void)impl_->tpl_cgroup.remove();
  }
  impl_->mgr.remove_owner_dirs();
}

std::optional<ReadySandbox> PoolSpawner::take() {
  auto sb = impl_->ready.try_pop();
  if (sb) kick(impl_->spawn_wake.get());  // refill
  return sb;
}

bool PoolSpawner::give_back(ReadySandbox&& sb) {
  if (!impl_->finished.try_push(std::move(sb))) return false;
  kick(impl_->reap_wake.get());
  return true;
}

void PoolSpawner::set_ready_target(uint32_t n) {
  impl_->target = std::min(n, impl_->cfg.ring_capacity);
  kick(impl_->spawn_wake.get());
}

size_t PoolSpawner::ready_count() const { return impl_->ready.size_approx(); }
const SpawnerStats& PoolSpawner::stats() const { return impl_->stats; }
pid_t PoolSpawner::template_pid() const { return impl_->tpl_pid.load(); }
uint64_t PoolSpawner::template_memory() const {
  return impl_->tpl_cgroup.valid() ? impl_->tpl_cgroup.memory_current() : 0;
}
// tpl_cgroup was set before start() returned (its handshake orders it) and never changes after.
Status PoolSpawner::set_template_memory(uint64_t bytes) {
  if (!impl_->tpl_cgroup.valid()) return Error{ENOENT, "the template has no cgroup"};
  return impl_->tpl_cgroup.set_memory_limit(bytes + CgroupLimits{}.headroom_bytes);  // as created
}

}  // namespace sp
