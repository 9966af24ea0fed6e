// libsandpool_clone.so: the isolation steps of a template clone, in C++ behind a C ABI (see template_clone.h).
#include "sandbox/template_clone.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <grp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "agent/supervisor.h"
#include "sandbox/caps.h"
#include "sandbox/child_report.h"
#include "sandbox/mounts.h"
#include "sandbox/net.h"
#include "sandbox/seccomp_policy.h"

namespace {

// Prepared once in the template; clones read their copy-on-write view.
sp::MountPlan* g_plan = nullptr;
sp::RlimitSet g_rlimits;
sock_filter* g_bpf = nullptr;
unsigned short g_bpf_len = 0;
int g_own_pidns = -1;
int g_template_pidfd = -1;  // readable once the template has exited (checked by clones)

}  // namespace

constexpr const char* kAgentDirInside = "/opt/sandpool/agent";

extern "C" int sp_tpl_init(int32_t parent_pid, uint64_t data_bytes, uint64_t tmp_bytes, const char* agent_path) {
  using namespace sp;
  // The template dies with the spawner thread that started it.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return -errno;
  if (getppid() != parent_pid) return -ESRCH;
  g_own_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
  if (g_own_pidns < 0) return -errno;
  g_template_pidfd = static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));
  if (g_template_pidfd < 0) return -errno;
  // Our own mount namespace holding only the sandbox root's base layer: clones copy it
  // (a dozen mounts, whatever the host has) and add their scratch layer.
  MountConfig cfg;
  cfg.layer = MountLayer::kBase;
  cfg.privileged = false;
  // The agent's directory appears at a fixed path, so no host path shows inside.
  if (agent_path && *agent_path) cfg.extra_binds.push_back({agent_path, kAgentDirInside, false});
  auto base = build_mount_plan(cfg);
  if (!base.ok()) return -base.error().code;
  uint32_t idx = 0;
  int err;
  if (unshare(CLONE_NEWNS) != 0) return -errno;
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return -errno;
  if ((err = open_mount_sources_in_child(*base, &idx))) return -err;
  if ((err = run_mount_plan_in_child(*base, &idx))) return -err;
  if ((err = pivot_in_child(*base))) return -err;
  close_range(kSourceFdBase, kSourceFdBase + kMaxSources - 1, 0);  // inclusive bound: 256+ are ours
  cfg.layer = MountLayer::kScratch;
  cfg.data_bytes = data_bytes;
  cfg.tmp_bytes = tmp_bytes;
  cfg.extra_binds.clear();
  auto scratch = build_mount_plan(cfg);
  if (!scratch.ok()) return -scratch.error().code;
  g_plan = new MountPlan(std::move(scratch.value()));
  g_rlimits = default_rlimits(0, 0);
  // Once here rather than in every clone (a syscall per capability; they inherit it): we keep
  // the capabilities we hold, and we never execve.
  if ((err = clear_bounding_set())) return -err;
  return 0;
}

extern "C" int sp_tpl_set_seccomp(const void* bpf, uint32_t len) {
  if (len == 0 || len % sizeof(sock_filter) != 0 || len / sizeof(sock_filter) > 0xffff) return -EINVAL;
  g_bpf = static_cast<sock_filter*>(std::malloc(len));
  if (!g_bpf) return -ENOMEM;
  std::memcpy(g_bpf, bpf, len);
  g_bpf_len = static_cast<unsigned short>(len / sizeof(sock_filter));
  return 0;
}

extern "C" int sp_tpl_prefork(void) {
  // A second unshare(NEWPID) fails with EINVAL until we are back in our own pid ns.
  if (setns(g_own_pidns, CLONE_NEWPID) != 0) return -errno;
  if (unshare(CLONE_NEWPID) != 0) return -errno;
  return 0;
}

extern "C" int sp_pidfd_open(int32_t pid) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  return fd < 0 ? -errno : fd;
}

namespace {

// Steps 1–5 and 7 of the clone's isolation (all but descriptor clean-up). Fails via sp_child_fail.
void isolate(const struct sp_clone_params* p) {
  using namespace sp;
  const int report = p->report_fd;
  int err;
  uint32_t idx = 0;
  if (!g_plan || !g_bpf) sp_child_fail(report, kStepWaitParent, EINVAL);
  // 1. into our cgroups before we touch (and so get charged for) any copy-on-write page.
  for (int fd : p->cgroup_fds) {
    if (fd < 0) continue;
    if (write(fd, "0", 1) != 1) sp_child_fail(report, kStepJoinCgroup, errno);
    close(fd);
  }
  // 2. namespaces; the pid ns was entered by the fork itself (sp_tpl_prefork). The network
  //    namespace was made ahead by the spawner (lo already up) when it could.
  const bool have_netns = p->netns_fd >= 0;
  if (have_netns) {
    if (setns(p->netns_fd, CLONE_NEWNET) != 0) sp_child_fail(report, kStepNetNs, errno);
    close(p->netns_fd);
  }
  if (unshare(CLONE_NEWNS | (have_netns ? 0 : CLONE_NEWNET) | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP) != 0)
    sp_child_fail(report, kStepNetNs, errno);
  // 3. filesystem.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) sp_child_fail(report, kStepMountPrivate, errno);
  if ((err = run_mount_plan_in_child(*g_plan, &idx))) sp_child_fail(report, kStepMountOps | (idx << 8), err);
  if (chown("/mnt/data", p->host_uid, p->host_gid) != 0) sp_child_fail(report, kStepMountOps, errno);
  if (chdir("/mnt/data") != 0) sp_child_fail(report, kStepPivotRoot, errno);
  // 4. network and names.
  if (!have_netns && (err = loopback_up_in_child())) sp_child_fail(report, kStepLoopback, err);
  if (sethostname("sandbox", 7) != 0) sp_child_fail(report, kStepHostname, errno);
  // 5. privileges.
  if ((err = apply_rlimits_in_child(g_rlimits))) sp_child_fail(report, kStepRlimits, err);
  // The bounding set is already empty: the template cleared its own (sp_tpl_init).
  if ((err = lock_securebits_in_child())) sp_child_fail(report, kStepCapsBounding, err);
  if (setgroups(0, nullptr) != 0) sp_child_fail(report, kStepUserIds, errno);
  if (setresgid(p->host_gid, p->host_gid, p->host_gid) != 0) sp_child_fail(report, kStepUserIds, errno);
  if (setresuid(p->host_uid, p->host_uid, p->host_uid) != 0) sp_child_fail(report, kStepUserIds, errno);
  if ((err = clear_caps_in_child())) sp_child_fail(report, kStepCapsClear, err);
  if ((err = set_no_new_privs_in_child())) sp_child_fail(report, kStepNoNewPrivs, err);
  // After the last credential change, which clears it; then make sure the template still lives.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) sp_child_fail(report, kStepParentDeath, errno);
  pollfd pfd{g_template_pidfd, POLLIN, 0};
  if (poll(&pfd, 1, 0) != 0) _exit(SP_CHILD_SETUP_FAILED);
  // 6. the filter, last of the privilege steps.
  sock_fprog prog{g_bpf_len, g_bpf};
  if ((err = load_seccomp_program(&prog))) sp_child_fail(report, kStepSeccomp, err);
}

// stdio to /dev/null, every fd but the agent socket closed, then the ready record.
void finish(const struct sp_clone_params* p) {
  using namespace sp;
  const int report = p->report_fd;
  // 7. descriptors: stdio to /dev/null (nothing user code writes reaches the server's log),
  //    everything else but the agent socket and the report pipe closed.
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) sp_child_fail(report, kStepCloseFds, errno);
  for (int fd = 0; fd < 3; ++fd)
    if (fd != p->agent_fd && fd != report && dup2(devnull, fd) < 0) sp_child_fail(report, kStepCloseFds, errno);
  close(devnull);
  int keep_lo = p->agent_fd < report ? p->agent_fd : report;
  int keep_hi = p->agent_fd < report ? report : p->agent_fd;
  if (keep_lo > 3) close_range(3, static_cast<unsigned>(keep_lo - 1), 0);
  if (keep_hi > keep_lo + 1) close_range(static_cast<unsigned>(keep_lo + 1), static_cast<unsigned>(keep_hi - 1), 0);
  close_range(static_cast<unsigned>(keep_hi + 1), ~0U, 0);
  ChildReport ready{0, 0};
  if (write(report, &ready, sizeof ready) != sizeof ready) _exit(SP_CHILD_SETUP_FAILED);
  close(report);
}

}  // namespace

extern "C" int sp_clone_enter(const struct sp_clone_params* p) {
  isolate(p);
  finish(p);
  return 0;
}

// Python's fork bookkeeping, exported by the interpreter that loaded us.
extern "C" void PyOS_BeforeFork(void);
extern "C" void PyOS_AfterFork_Parent(void);
extern "C" void PyOS_AfterFork_Child(void);

namespace {
// Whether forks run the interpreter's at-fork bookkeeping (sp_tpl_set_fork_hooks).
bool g_fork_hooks = true;
}  // namespace

// template.py turns the interpreter's fork bookkeeping off when the template has one thread.
// It re-creates locks another thread might hold and runs the callbacks modules registered
// (random's reseed, threading's and logging's lock resets, ...): Python code in every clone,
// each object it touches a page copied from the template (≈ 245 copy-on-write faults, ≈ 1 MiB,
// with numpy, pandas and matplotlib), and the before/after-parent callbacks run in the template
// itself, writing its pages between forks. With one thread there is no lock held elsewhere and
// no thread to forget; the clone's own code reseeds what it uses. libc's fork() still runs the
// C libraries' pthread_atfork handlers.
extern "C" void sp_tpl_set_fork_hooks(int on) { g_fork_hooks = on != 0; }

extern "C" int sp_tpl_fork_clone(const struct sp_clone_params* p) {
  // Called through ctypes.PyDLL, so we hold the GIL, as os.fork() would.
  if (g_fork_hooks) PyOS_BeforeFork();
  pid_t pid = fork();
  if (pid == 0) {
    // Isolate first, in C, before the interpreter's after-fork work (if any) touches (and so
    // copies) its pages: that work then happens inside the clone's own cgroup.
    isolate(p);  // returns only when isolated (namespaces, mounts, ids, caps, seccomp)
    // The interpreter's at-fork hooks may close files its objects own: let them, before we
    // close every descriptor we did not pass.
    if (g_fork_hooks) PyOS_AfterFork_Child();
    finish(p);
    return 0;
  }
  int err = errno;
  if (g_fork_hooks) PyOS_AfterFork_Parent();
  return pid < 0 ? -err : pid;
}

namespace {

// The control protocol of template.py (see its docstring), little-endian, packed.
struct SpawnRequest {
  uint64_t gen;
  uint32_t uid, gid, flags;
} __attribute__((packed));
struct SpawnReply {
  uint64_t gen;
  int32_t pid, err;
  uint64_t fork_ns;
} __attribute__((packed));
constexpr uint32_t kFlagNetns = 1;  // the last fd is a network namespace made ahead
constexpr int kMaxRequestFds = 8;

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int send_reply(int ctrl_fd, const SpawnReply& r, int pidfd) {
  iovec iov{const_cast<SpawnReply*>(&r), sizeof r};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  char cbuf[CMSG_SPACE(sizeof(int))] = {};
  if (pidfd >= 0) {
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    // SAFETY: cbuf is CMSG_SPACE(sizeof(int)) bytes, room for the header and one fd.
    std::memcpy(CMSG_DATA(c), &pidfd, sizeof pidfd);
  }
  return sendmsg(ctrl_fd, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

// Reaps every exited clone. Their pidfds were opened (and sent) before, so no pid we
// still report on can be reused.
void reap_clones() {
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

}  // namespace

namespace {
bool g_share_on_serve = false;  // sp_tpl_share_memory_on_serve
}  // namespace

extern "C" void sp_tpl_share_memory_on_serve(void) { g_share_on_serve = true; }

extern "C" int sp_tpl_serve(int32_t ctrl_fd, int32_t* agent_fd_out, uint32_t grace_ms, struct sp_agent_worker* worker) {
  if (g_share_on_serve) {
    // Here rather than from Python just before this call: that call itself (the attribute lookup,
    // the argument objects, its frame) writes to Python's memory after the copy, and each range so
    // written gets an anon_vma, whose page-table entries every fork then copies whole.
    g_share_on_serve = false;
    int32_t ranges = 0;
    int64_t got = sp_tpl_share_memory(&ranges);
    if (got < 0)
      dprintf(2, "sandpool template: memory not shared (%s) after %d mappings; forks copy the page-table entries of the rest\n",
              strerror(static_cast<int>(-got)), ranges);
  }
  // Between forks the template runs only this loop: every page it writes after a fork is
  // copied (the clone shares the old one) and charged to the template, once per clone, so a
  // Python loop here cost ~0.3 MiB and ~0.5 ms per clone; this one touches a stack page or two.
  for (;;) {
    pollfd pfd{ctrl_fd, POLLIN, 0};
    int n = poll(&pfd, 1, 1000);  // wakes up now and then to reap clones that were killed
    reap_clones();
    if (n < 0 && errno != EINTR) return -errno;
    if (n <= 0) continue;
    SpawnRequest req{};
    iovec iov{&req, sizeof req};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    char cbuf[CMSG_SPACE(sizeof(int) * kMaxRequestFds)] = {};
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    ssize_t got = recvmsg(ctrl_fd, &mh, MSG_CMSG_CLOEXEC);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return errno == ECONNRESET ? 0 : -errno;
    if (got == 0) return 0;  // the spawner went away
    int fds[kMaxRequestFds];
    int nfds = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      // SAFETY: the kernel wrote cmsg_len bytes (header + k ints) inside cbuf; we copy at most
      // kMaxRequestFds of them (MSG_CTRUNC, checked below, means some were dropped and closed).
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k && nfds < kMaxRequestFds; ++i)
        std::memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    auto close_all = [&] {
      for (int i = 0; i < nfds; ++i) close(fds[i]);
    };
    SpawnReply reply{req.gen, 0, 0, 0};
    if (got != static_cast<ssize_t>(sizeof req) || nfds < 2 || (mh.msg_flags & MSG_CTRUNC)) {
      close_all();
      reply.err = EINVAL;
      if (int e = send_reply(ctrl_fd, reply, -1)) return e;
      continue;
    }
    sp_clone_params params{};
    params.host_uid = req.uid;
    params.host_gid = req.gid;
    params.agent_fd = fds[0];
    params.report_fd = fds[1];
    params.netns_fd = (req.flags & kFlagNetns) && nfds > 2 ? fds[nfds - 1] : -1;
    int cg_end = nfds - (params.netns_fd >= 0 ? 1 : 0);
    for (int i = 0; i < 4; ++i) params.cgroup_fds[i] = 2 + i < cg_end ? fds[2 + i] : -1;
    if (int rc = sp_tpl_prefork(); rc != 0) {
      close_all();
      reply.err = -rc;
      if (int e = send_reply(ctrl_fd, reply, -1)) return e;
      continue;
    }
    uint64_t t0 = monotonic_ns();
    int pid = sp_tpl_fork_clone(&params);
    if (pid == 0) {
      // The clone, isolated; finish() closed every fd but the agent socket (ctrl_fd too).
      *agent_fd_out = params.agent_fd;
      // The supervisor forks its first worker before any Python runs here: a page the clone wrote
      // first and its worker then wrote again would be held twice (the supervisor held 836 KiB
      // of its own when Python's serve() started it, 64 KiB now).
      if (worker && sp_agent_supervise(params.agent_fd, grace_ms, worker) != 0) _exit(SP_CHILD_SETUP_FAILED);
      return 1;
    }
    reply.fork_ns = monotonic_ns() - t0;
    close_all();
    if (pid < 0) {
      reply.err = -pid;
      if (int e = send_reply(ctrl_fd, reply, -1)) return e;
      continue;
    }
    reply.pid = pid;
    int pidfd = sp_pidfd_open(pid);
    if (pidfd < 0) reply.err = -pidfd;
    int e = send_reply(ctrl_fd, reply, pidfd);
    if (pidfd >= 0) close(pidfd);
    if (e) return e;
  }
}
