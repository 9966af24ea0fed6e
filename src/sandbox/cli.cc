// `sandpool sandbox-run [options] -- CMD...`: one command in a fresh sandbox, with the server's code path; not `init`.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cli.h"
#include "sandbox/cgroup.h"
#include "sandbox/process_spawn.h"
#include "util/log.h"

namespace sp {
namespace {

constexpr const char* kUsage =
    "usage: sandpool sandbox-run [options] -- CMD [ARGS...]\n"
    "  --memory SIZE      memory for the command (default 512m); init gets --headroom on top\n"
    "  --headroom SIZE    memory reserved for init (default 16m)\n"
    "  --pids N           max tasks (default 256)\n"
    "  --cpu CPUS         CPU quota in CPUs, e.g. 0.5 (default 1)\n"
    "  --data-size SIZE   size of /mnt/data (default 256m)\n"
    "  --tmp-size SIZE    size of /tmp (default 64m)\n"
    "  --net none         loopback only (the only mode so far)\n"
    "  --rootfs DIR       use DIR as the runtime instead of the host's /usr, /lib*, /bin, /etc subset\n"
    "  --ro-bind SRC[:DST], --bind SRC[:DST]   extra binds (read-only / writable)\n"
    "  --env KEY=VALUE    add to the command's environment (repeatable)\n"
    "  --timeout SECONDS  kill the sandbox after this long (exit 124)\n"
    "  --respawn N        restart the command up to N times when a signal kills it (/mnt/data survives)\n"
    "  --slot N           host uid slot (default: our pid)\n"
    "  --report           print 'sandpool-result status=... exit_code=... signal=... oom_kills=...' on stderr\n"
    "  --print-policy     print the seccomp policy table and exit\n"
    "exit status: the command's, 128+signal, 124 timeout, 125 sandbox setup failed.\n";

bool parse_size(const char* s, uint64_t* out) {
  char* end;
  double v = std::strtod(s, &end);
  if (end == s || v < 0) return false;
  uint64_t mult = 1;
  switch (*end) {
    case 'k': case 'K': mult = 1ull << 10; ++end; break;
    case 'm': case 'M': mult = 1ull << 20; ++end; break;
    case 'g': case 'G': mult = 1ull << 30; ++end; break;
    default: break;
  }
  if (*end == 'b' || *end == 'B') ++end;
  if (*end) return false;
  *out = static_cast<uint64_t>(v * static_cast<double>(mult));
  return true;
}

BindSpec parse_bind(const char* arg, bool writable) {
  std::string s = arg;
  size_t colon = s.find(':');
  if (colon == std::string::npos) return {s, s, writable};
  return {s.substr(0, colon), s.substr(colon + 1), writable};
}

double now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

}  // namespace

int sandbox_run_main(int argc, char** argv) {
  SandboxSpec spec;
  spec.env = default_sandbox_env();
  spec.slot = static_cast<uint64_t>(getpid());
  CgroupLimits limits;
  double timeout_s = 0;
  bool report = false;
  int i = 1;
  auto need = [&](const char* opt) -> const char* {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "sandbox-run: %s needs a value\n%s", opt, kUsage);
      std::exit(2);
    }
    return argv[++i];
  };
  auto size_opt = [&](const char* opt, uint64_t* out) {
    const char* v = need(opt);
    if (!parse_size(v, out)) {
      std::fprintf(stderr, "sandbox-run: bad size for %s: %s\n", opt, v);
      std::exit(2);
    }
  };
  for (; i < argc; ++i) {
    const char* a = argv[i];
    if (!std::strcmp(a, "--")) { ++i; break; }
    if (!std::strcmp(a, "--help") || !std::strcmp(a, "-h")) { std::fputs(kUsage, stdout); return 0; }
    if (!std::strcmp(a, "--memory")) size_opt(a, &limits.memory_bytes);
    else if (!std::strcmp(a, "--headroom")) size_opt(a, &limits.headroom_bytes);
    else if (!std::strcmp(a, "--data-size")) size_opt(a, &spec.mounts.data_bytes);
    else if (!std::strcmp(a, "--tmp-size")) size_opt(a, &spec.mounts.tmp_bytes);
    else if (!std::strcmp(a, "--pids")) limits.pids_max = static_cast<uint32_t>(std::atoi(need(a)));
    else if (!std::strcmp(a, "--cpu")) limits.cpu_millis = static_cast<uint32_t>(std::atof(need(a)) * 1000);
    else if (!std::strcmp(a, "--timeout")) timeout_s = std::atof(need(a));
    else if (!std::strcmp(a, "--respawn")) spec.respawns = std::atoi(need(a));
    else if (!std::strcmp(a, "--slot")) spec.slot = std::strtoull(need(a), nullptr, 10);
    else if (!std::strcmp(a, "--rootfs")) spec.mounts.rootfs = need(a);
    else if (!std::strcmp(a, "--ro-bind")) spec.mounts.extra_binds.push_back(parse_bind(need(a), false));
    else if (!std::strcmp(a, "--bind")) spec.mounts.extra_binds.push_back(parse_bind(need(a), true));
    else if (!std::strcmp(a, "--env")) spec.env.push_back(need(a));
    else if (!std::strcmp(a, "--report")) report = true;
    else if (!std::strcmp(a, "--net")) {
      if (std::strcmp(need(a), "none") != 0) { std::fprintf(stderr, "sandbox-run: only --net none is supported\n"); return 2; }
    } else if (!std::strcmp(a, "--print-policy")) {
      size_t n;
      const SeccompEntry* p = seccomp_policy(&n);
      for (size_t k = 0; k < n; ++k) std::printf("%-24s %d  %s\n", p[k].name, static_cast<int>(p[k].rule), p[k].reason);
      return 0;
    } else { std::fprintf(stderr, "sandbox-run: unknown option %s\n%s", a, kUsage); return 2; }
  }
  if (i >= argc) { std::fputs(kUsage, stderr); return 2; }
  for (; i < argc; ++i) spec.argv.push_back(argv[i]);

  // A child that dies early must not take us down with SIGPIPE on the sync pipe.
  signal(SIGPIPE, SIG_IGN);
  double t0 = now_ms();
  auto mgr = CgroupManager::open();
  if (!mgr.ok()) {
    std::fprintf(stderr, "sandbox-run: cgroups: %s\n", mgr.error().message().c_str());
    return 125;
  }
  if (int n = mgr->reclaim_stale(); n > 0) LOG_INFO("reclaimed %d sandbox cgroup(s) of an earlier run", n);
  auto spawner = Spawner::create();
  if (!spawner.ok()) {
    std::fprintf(stderr, "sandbox-run: %s\n", spawner.error().message().c_str());
    return 125;
  }
  auto cg = mgr->create("run" + std::to_string(getpid()), limits);
  if (!cg.ok()) {
    std::fprintf(stderr, "sandbox-run: cgroup: %s\n", cg.error().message().c_str());
    return 125;
  }
  auto sb = spawner->spawn(spec, *cg);
  if (!sb.ok()) {
    std::fprintf(stderr, "sandbox-run: sandbox setup failed: %s\n", sb.error().message().c_str());
    if (report) std::fprintf(stderr, "sandpool-result status=SetupFailed exit_code=125 signal=0 oom_kills=0\n");
    mgr->remove_owner_dirs();
    return 125;
  }
  double t_ready = now_ms();

  bool timed_out = false;
  pollfd pfd{sb->pidfd.get(), POLLIN, 0};
  int wait_ms = timeout_s > 0 ? static_cast<int>(timeout_s * 1000) : -1;
  for (;;) {
    int rc = poll(&pfd, 1, wait_ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      timed_out = true;
      (void)cg->kill();
    }
    break;
  }
  siginfo_t si{};
  waitid(P_PIDFD, static_cast<id_t>(sb->pidfd.get()), &si, WEXITED);
  char line[64] = {0};
  ssize_t n = read(sb->status_fd.get(), line, sizeof line - 1);
  uint64_t ooms = cg->oom_kills();
  (void)cg->kill();
  Status removed = cg->remove();
  if (!removed.ok()) LOG_WARN("cgroup remove: %s", removed.error().message().c_str());
  mgr->remove_owner_dirs();

  const char* status = "Exited";
  int code = 0, sig = 0;
  if (n > 0 && std::strncmp(line, "exit ", 5) == 0) {
    code = std::atoi(line + 5);
  } else if (n > 0 && std::strncmp(line, "signal ", 7) == 0) {
    sig = std::atoi(line + 7);
    code = 128 + sig;
    status = "Signaled";
  } else {  // init itself was killed
    sig = si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED ? si.si_status : 0;
    code = sig ? 128 + sig : si.si_status;
    status = "InitDied";
  }
  if (ooms > 0 && sig == SIGKILL) status = "OutOfMemory";
  if (timed_out) {
    status = "Timeout";
    code = 124;
  }
  if (report)
    std::fprintf(stderr, "sandpool-result status=%s exit_code=%d signal=%d oom_kills=%llu ready_ms=%.2f total_ms=%.2f\n",
                 status, code, sig, static_cast<unsigned long long>(ooms), t_ready - t0, now_ms() - t0);
  else if (std::strcmp(status, "Exited") != 0 && std::strcmp(status, "Signaled") != 0)
    std::fprintf(stderr, "sandbox-run: %s\n", status);
  return code;
}

}  // namespace sp
