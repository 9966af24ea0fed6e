// clone3 + the flat list of checked child steps for one sandbox (see process_spawn.h); the only file that calls clone3.
#include "sandbox/process_spawn.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "sandbox/caps.h"
#include "sandbox/child_report.h"
#include "sandbox/net.h"
#include "sandbox/userns.h"
#include "util/log.h"

namespace sp {
namespace {

constexpr int kInitStatusFd = 3;  // where init finds its status pipe (see init.cc)
constexpr int kHighFdFloor = 256;  // above kSourceFdBase + kMaxSources
constexpr int kSetupTimeoutMs = 30000;  // clone → exec; normally 1–20 ms

// Everything the child needs, prepared by the parent: the child reads it from its copy
// of our memory and allocates nothing.
struct ChildArgs {
  const MountPlan* plan;
  const SeccompProgram* seccomp;
  const RlimitSet* rlimits;
  bool privileged;
  bool new_net;
  uid_t uid;
  gid_t gid;
  int stdio_fd;   // -1: keep ours
  int output_fd;  // -1: stdout and stderr are stdio_fd (or ours)
  char* const* init_argv;
  char* const* envp;
  int exe_fd;
  int sync_r, sync_w;      // the parent writes "go" once the maps are written; EOF means it died
  int report_r, report_w;  // ChildReport on failure; closed by exec on success
  int status_r, status_w;  // init's status pipe
};

int move_high(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, kHighFdFloor); }

// The child's flat list of steps. Never returns.
[[noreturn]] void child_main(const ChildArgs& a) {
  int report = move_high(a.report_w);
  int sync = move_high(a.sync_r);
  int exe = move_high(a.exe_fd);
  int status = move_high(a.status_w);
  int stdio = a.stdio_fd >= 0 ? move_high(a.stdio_fd) : -1;
  int output = a.output_fd >= 0 ? move_high(a.output_fd) : -1;
  if (report < 0 || sync < 0 || exe < 0 || status < 0 || (a.stdio_fd >= 0 && stdio < 0) || (a.output_fd >= 0 && output < 0))
    _exit(SP_CHILD_SETUP_FAILED);
  // The parent's ends: holding them would hide the parent's death from us.
  close(a.sync_w);
  close(a.report_r);
  close(a.status_r);
  uint32_t idx = 0;
  int err;

  char go = 0;
  if (read(sync, &go, 1) != 1) _exit(SP_CHILD_SETUP_FAILED);  // parent gone or gave up: nothing to report
  if ((err = become_root_in_child(a.privileged))) sp_child_fail(report, kStepRootIds, err);
  // The parent has moved us into our cgroup; make it the root of what we can see.
  if (unshare(CLONE_NEWCGROUP) != 0) sp_child_fail(report, kStepCgroupNs, errno);
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) sp_child_fail(report, kStepMountPrivate, errno);
  if ((err = open_mount_sources_in_child(*a.plan, &idx))) sp_child_fail(report, kStepOpenSources, err);
  if ((err = run_mount_plan_in_child(*a.plan, &idx))) sp_child_fail(report, kStepMountOps | (idx << 8), err);
  if ((err = pivot_in_child(*a.plan))) sp_child_fail(report, kStepPivotRoot, err);
  close_range(kSourceFdBase, kSourceFdBase + kMaxSources - 1, 0);  // inclusive bound: 256+ are ours
  if (a.new_net && (err = loopback_up_in_child())) sp_child_fail(report, kStepLoopback, err);
  if (sethostname("sandbox", 7) != 0) sp_child_fail(report, kStepHostname, errno);
  if ((err = apply_rlimits_in_child(*a.rlimits))) sp_child_fail(report, kStepRlimits, err);
  if ((err = drop_bounding_set_in_child())) sp_child_fail(report, kStepCapsBounding, err);
  if ((err = become_user_in_child(a.privileged, a.uid, a.gid))) sp_child_fail(report, kStepUserIds, err);
  if ((err = clear_caps_in_child())) sp_child_fail(report, kStepCapsClear, err);
  if ((err = set_no_new_privs_in_child())) sp_child_fail(report, kStepNoNewPrivs, err);
  // After the last credential change (which clears it). If the parent died before this
  // point, its end of the sync pipe is closed and we stop here.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) sp_child_fail(report, kStepParentDeath, errno);
  pollfd pfd{sync, POLLIN, 0};
  if (poll(&pfd, 1, 0) != 0) _exit(SP_CHILD_SETUP_FAILED);
  if (stdio >= 0 && (dup2(stdio, 0) < 0 || dup2(stdio, 1) < 0 || dup2(stdio, 2) < 0))
    sp_child_fail(report, kStepCloseFds, errno);
  if (output >= 0 && (dup2(output, 1) < 0 || dup2(output, 2) < 0)) sp_child_fail(report, kStepCloseFds, errno);
  // Nothing inherited survives exec except stdio and init's status pipe.
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) sp_child_fail(report, kStepCloseFds, errno);
  if (dup3(status, kInitStatusFd, 0) < 0) sp_child_fail(report, kStepCloseFds, errno);
  sock_fprog prog = a.seccomp->prog();
  if ((err = load_seccomp_program(&prog))) sp_child_fail(report, kStepSeccomp, err);
  // SAFETY: execveat on an O_PATH fd of our own binary (opened before pivot_root) with
  // AT_EMPTY_PATH; argv/envp are NULL-terminated arrays prepared by the parent.
  syscall(SYS_execveat, exe, "", a.init_argv, a.envp, AT_EMPTY_PATH);
  sp_child_fail(report, kStepExec, errno);
}

struct Pipe {
  UniqueFd r, w;
};
Result<Pipe> make_pipe() {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return errno_error("pipe2");
  return Pipe{UniqueFd(p[0]), UniqueFd(p[1])};
}

std::vector<char*> c_array(const std::vector<std::string>& v) {
  std::vector<char*> out;
  for (const auto& s : v) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::vector<std::string> default_sandbox_env() {
  return {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/mnt/data", "TMPDIR=/tmp", "LANG=C.UTF-8", "USER=sandbox",
          "MPLBACKEND=Agg", "MPLCONFIGDIR=/tmp/.matplotlib", "XDG_CACHE_HOME=/tmp/.cache", "NUMEXPR_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1"};
}

Result<Spawner> Spawner::create(const std::string& init_path) {
  Spawner s;
  SP_TRY_ASSIGN(s.seccomp_, compile_seccomp_policy());
  if (!init_path.empty()) {
    s.self_exe_.reset(open(init_path.c_str(), O_PATH | O_CLOEXEC));
    if (!s.self_exe_) return errno_error("open sandpool-init");
    s.static_init_ = true;
    return s;
  }
  // Prefer the static sandpool-init next to us (it runs in any rootfs); else our own binary.
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    std::string dir(exe);
    dir.resize(dir.rfind('/'));
    for (const std::string& cand : {dir + "/sandbox/sandpool-init", dir + "/sandpool-init"}) {
      s.self_exe_.reset(open(cand.c_str(), O_PATH | O_CLOEXEC));
      if (s.self_exe_) {
        s.static_init_ = true;
        return s;
      }
    }
  }
  s.self_exe_.reset(open("/proc/self/exe", O_PATH | O_CLOEXEC));
  if (!s.self_exe_) return errno_error("open /proc/self/exe");
  return s;
}

Result<SandboxProcess> Spawner::spawn(const SandboxSpec& spec, Cgroup& cgroup) const {
  if (spec.argv.empty()) return Error{kEInvalid, "empty command"};
  IdMapping ids = id_mapping_for_slot(spec.slot);
  if (spec.id_range > 0) {
    if (!ids.privileged) return Error{EPERM, "id range needs a root parent"};
    ids.range = spec.id_range;
    ids.host_root_uid = ids.host_root_gid = spec.host_id_base;
  }
  MountConfig mcfg = spec.mounts;
  mcfg.privileged = ids.privileged;
  MountPlan own_plan;
  if (!spec.plan) {
    SP_TRY_ASSIGN(own_plan, build_mount_plan(mcfg));
  }
  const MountPlan& plan = spec.plan ? *spec.plan : own_plan;
  RlimitSet rlimits = default_rlimits(mcfg.data_bytes, 0);

  std::vector<std::string> init_args = {"sandpool", "init", "--status-fd", std::to_string(kInitStatusFd),
                                        "--respawn", std::to_string(spec.respawns), "--"};
  if (static_init_) {  // sandpool-init takes no subcommand word
    init_args.erase(init_args.begin());
    init_args[0] = "sandpool-init";
  }
  init_args.insert(init_args.end(), spec.argv.begin(), spec.argv.end());
  std::vector<char*> argv = c_array(init_args);
  std::vector<char*> envp = c_array(spec.env);

  SP_TRY_ASSIGN(Pipe sync, make_pipe());
  SP_TRY_ASSIGN(Pipe report, make_pipe());
  SP_TRY_ASSIGN(Pipe status, make_pipe());
  ChildArgs a{&plan, &seccomp_, &rlimits, ids.privileged, spec.network == Network::kIsolated, spec.uid, spec.gid,
              spec.stdio_fd, spec.output_fd, argv.data(), envp.data(),
              self_exe_.get(), sync.r.get(), sync.w.get(), report.r.get(), report.w.get(), status.r.get(),
              status.w.get()};

  int pidfd = -1;
  clone_args ca{};
  ca.flags = CLONE_PIDFD | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
  if (spec.network == Network::kIsolated) ca.flags |= CLONE_NEWNET;
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  ca.exit_signal = SIGCHLD;
  // SAFETY: clone3 without CLONE_VM is fork-like: the child runs on a copy of this stack
  // and only touches `a` and what it points to (all prepared above), then execs or _exits.
  long pid = syscall(SYS_clone3, &ca, sizeof ca);
  if (pid < 0) return errno_error("clone3");
  if (pid == 0) child_main(a);

  SandboxProcess out;
  out.pid = static_cast<pid_t>(pid);
  out.pidfd.reset(pidfd);
  sync.r.reset();
  report.w.reset();
  status.w.reset();
  auto fail = [&](Error e) -> Error {
    sync.w.reset();  // the child reads EOF and exits if it has not started
    syscall(SYS_pidfd_send_signal, out.pidfd.get(), SIGKILL, nullptr, 0);
    siginfo_t si;
    waitid(P_PIDFD, static_cast<id_t>(out.pidfd.get()), &si, WEXITED);
    return e;
  };
  if (Status st = cgroup.add(out.pid); !st.ok()) return fail(st.error());
  if (Status st = write_id_maps_from_parent(out.pid, ids); !st.ok()) return fail(st.error());
  if (write(sync.w.get(), "g", 1) != 1) return fail(errno_error("write sync pipe"));
  ChildReport r{};
  ssize_t n;
  // Setup takes milliseconds; a child stuck before exec must not stall the calling thread forever.
  pollfd rp{report.r.get(), POLLIN, 0};
  int ready;
  do {
    ready = poll(&rp, 1, kSetupTimeoutMs);
  } while (ready < 0 && errno == EINTR);
  if (ready == 0) return fail(Error{ETIMEDOUT, "sandbox setup timed out"});
  do {
    n = read(report.r.get(), &r, sizeof r);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof r) {
    if ((r.step & 0xff) == kStepMountOps && (r.step >> 8) < plan.ops.size())
      LOG_WARN("sandbox mount operation %u failed on %s (%s)", r.step >> 8, plan.ops[r.step >> 8].target.c_str(),
               plan.ops[r.step >> 8].arg.c_str());
    return fail(Error{r.err, step_name(r.step)});
  }
  if (n != 0) return fail(Error{kEProtocol, "child report"});
  // exec happened: the child no longer holds the sync pipe, PDEATHSIG covers us from here.
  out.status_fd = std::move(status.r);
  return out;
}

}  // namespace sp
