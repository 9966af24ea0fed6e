// Pool-level benchmark of the micro-VM tier against the process tier in the same run (issue 6 E):
// clone-to-ready and idle memory per sandbox, through PoolSpawner exactly as the server drives it.
//
// Usage: vmm_pool_bench SANDPOOL_BINARY AGENT_DIR [--n 40] [--idle 8] [--tier both|microvm|process] [--gap-ms 20]
// Prints markdown on stdout. Needs root and /dev/kvm (exit 77 without it). For each tier:
//  1. clone-to-ready, one clone at a time: spawn request → the sandbox's "ready" record (the
//     spawner's own ready_ns; a micro-VM child writes it once its agent has sent its Hello and
//     waits for a request, a process-tier clone once its isolation is done), and → the agent's
//     Hello read on the session socket (what a pool waits for before it hands a sandbox out; this
//     loop waits for the spawner's wake-up as the server does); --gap-ms between a sandbox's return and the next
//     request (a micro-VM template's spare is made in that gap: a shorter gap than the spare takes
//     puts part of it on the request's path);
//  2. memory of --idle idle sandboxes after their Hello: the memcg's memory.current per sandbox,
//     the template cgroup's growth per idle sandbox (kernel memory a sandbox's process allocated
//     before it joined its own cgroup: its fork, and for microvm the VM its VMM cloned ahead),
//     and from /proc/PID/smaps_rollup of the sandbox's process (the VMM for microvm, the agent
//     supervisor for process) Private_Dirty + Private_Clean (for a VMM: its own heap plus the
//     guest pages it has written, copy-on-write over the template's memfd) and Pss (private plus
//     its share of the template's pages), and Anonymous (copy-on-write copies and heap: what this
//     sandbox alone costs). Filling the pool with those --idle sandboxes from none (ready target
//     --idle at once, the spawner's own pace) gives the refill time per sandbox.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "sandbox/pool_spawner.h"

namespace {

double now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5))];
}

std::string fmt(const std::vector<double>& v) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.2f (p10 %.2f, p90 %.2f)", pct(v, 50), pct(v, 10), pct(v, 90));
  return buf;
}

// Waits for the agent's first frame (Hello): true when some bytes arrived within `ms`.
bool wait_hello(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, ms) != 1) return false;
  char buf[4096];
  return recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0;
}

uint64_t smaps_kib(pid_t pid, const char* key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  size_t klen = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, klen, key) == 0 && line.size() > klen && line[klen] == ':')
      return std::strtoull(line.c_str() + klen + 1, nullptr, 10);
  }
  return 0;
}

// The supervisor of a process-tier clone is the clone itself; a microvm sandbox's process is the VMM.
struct TierResult {
  std::vector<double> ready_ms, hello_ms, memcg_kib, private_kib, pss_kib, anon_kib;
  double tpl_delta_kib = 0;  // the template cgroup's growth per idle sandbox (what a sandbox left charged there)
  double tpl_kib = 0;        // the template cgroup's memory with no sandbox (its spare included)
  double template_start_ms = 0;
  double fill_ms = 0;  // ready target 0 -> idle: until the last of them said Hello
  int filled = 0;
};

bool run_tier(const char* tier, const std::string& sandpool, const std::string& agent, int n, int idle, int gap_ms,
              TierResult* out) {
  sp::PoolTemplateConfig cfg;
  cfg.pool = std::string("bench-") + tier;
  cfg.agent_path = agent;
  cfg.ready_target = 0;
  cfg.max_pending = 1;
  cfg.limits.memory_bytes = 2ull << 30;
  // --debug: each VMM logs its Vm::clone time to our stderr ("vmm: clone X ms"; run_pool.sh reads it).
  if (std::strcmp(tier, "microvm") == 0) {
    cfg.template_cmd = {sandpool, "vmm-template", "--vm-memory-mib", "1984", "--debug", "1"};
    // As microvm_source.cc; SANDPOOL_BENCH_NEXT_DURING_CLONE set: the process tier's order (A/B).
    cfg.prepare_next_during_clone = getenv("SANDPOOL_BENCH_NEXT_DURING_CLONE") != nullptr;
    cfg.netns_ahead = false;
    cfg.direct_spares = true;
  }
  double t0 = now_ms();
  // The spawner kicks an eventfd for each ready sandbox (the server's loop is woken the same way):
  // waiting on it, not polling, leaves the CPUs to the clone.
  sp::UniqueFd ready_kick(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  auto kick = [](void* ctx) {
    uint64_t one = 1;
    (void)!write(*static_cast<int*>(ctx), &one, sizeof one);
  };
  int kick_fd = ready_kick.get();
  auto ps = sp::PoolSpawner::start(cfg, kick, &kick_fd);
  if (!ps.ok()) {
    std::fprintf(stderr, "%s: start: %s\n", tier, ps.error().message().c_str());
    return false;
  }
  out->template_start_ms = now_ms() - t0;
  auto& spawner = *ps.value();
  auto take = [&](double deadline_ms) -> std::optional<sp::ReadySandbox> {
    for (;;) {
      if (auto sb = spawner.take()) return sb;
      double left = deadline_ms - now_ms();
      if (left <= 0) return std::nullopt;
      pollfd p{ready_kick.get(), POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(std::min(left, 1000.0)) + 1) > 0) {
        uint64_t v;
        (void)!read(ready_kick.get(), &v, sizeof v);
      }
    }
  };
  // 1. One at a time: target 1, take it, wait for its hello, give it back, next.
  for (int i = 0; i < n; ++i) {
    spawner.set_ready_target(1);
    auto sb = take(now_ms() + 30000);
    spawner.set_ready_target(0);
    if (!sb) {
      std::fprintf(stderr, "%s: no clone in 30 s\n", tier);
      return false;
    }
    double ready_at = now_ms();
    if (!wait_hello(sb->agent_fd.get(), 30000)) {
      std::fprintf(stderr, "%s: no hello\n", tier);
      return false;
    }
    double hello_after = now_ms() - ready_at;
    out->ready_ms.push_back(static_cast<double>(sb->ready_ns) / 1e6);
    out->hello_ms.push_back(static_cast<double>(sb->ready_ns) / 1e6 + hello_after);
    while (!spawner.give_back(std::move(*sb))) usleep(1000);
    usleep(static_cast<useconds_t>(gap_ms) * 1000);  // let the reaper finish, as between sessions
  }
  // 2. Idle memory.
  std::vector<sp::ReadySandbox> held;
  usleep(500000);  // settle (the reaper)
  const double tpl_before = static_cast<double>(spawner.template_memory()) / 1024.0;
  out->tpl_kib = tpl_before;
  const double fill_start = now_ms();
  spawner.set_ready_target(static_cast<uint32_t>(idle));
  while (static_cast<int>(held.size()) < idle) {
    auto sb = take(now_ms() + 60000);
    if (!sb) break;
    if (wait_hello(sb->agent_fd.get(), 30000)) held.push_back(std::move(*sb));
  }
  out->fill_ms = now_ms() - fill_start;
  out->filled = static_cast<int>(held.size());
  spawner.set_ready_target(0);
  usleep(500000);  // settle
  if (!held.empty())
    out->tpl_delta_kib = (static_cast<double>(spawner.template_memory()) / 1024.0 - tpl_before) / static_cast<double>(held.size());
  for (auto& sb : held) {
    out->memcg_kib.push_back(static_cast<double>(sb.cgroup.memory_current()) / 1024.0);
    out->private_kib.push_back(static_cast<double>(smaps_kib(sb.pid, "Private_Dirty") + smaps_kib(sb.pid, "Private_Clean")));
    out->pss_kib.push_back(static_cast<double>(smaps_kib(sb.pid, "Pss")));
    out->anon_kib.push_back(static_cast<double>(smaps_kib(sb.pid, "Anonymous")));
  }
  for (auto& sb : held)
    while (!spawner.give_back(std::move(sb))) usleep(1000);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: vmm_pool_bench SANDPOOL AGENT_DIR [--n N] [--idle N] [--tier both|microvm|process]\n");
    return 2;
  }
  std::string sandpool = argv[1], agent = argv[2], which = "both";
  int n = 40, idle = 8, gap_ms = 20;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--n")) n = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--idle")) idle = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--tier")) which = argv[i + 1];
    else if (!std::strcmp(argv[i], "--gap-ms")) gap_ms = std::atoi(argv[i + 1]);
  }
  if (access("/dev/kvm", R_OK | W_OK) != 0 && which != "process") {
    std::printf("SKIP: /dev/kvm is not usable\n");
    return 77;
  }
  std::vector<const char*> tiers;
  if (which == "both" || which == "microvm") tiers.push_back("microvm");
  if (which == "both" || which == "process") tiers.push_back("process");
  std::vector<TierResult> res(tiers.size());
  for (size_t i = 0; i < tiers.size(); ++i)
    if (!run_tier(tiers[i], sandpool, agent, n, idle, gap_ms, &res[i])) return 1;
  std::printf("| tier | template start ms | request → ready record ms | request → agent Hello ms | memcg KiB/idle sandbox | "
              "template memcg Δ KiB/idle sandbox | Private KiB (smaps_rollup) | Anonymous KiB | Pss KiB | fill ms/sandbox | "
              "template memcg MiB |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < tiers.size(); ++i) {
    const TierResult& r = res[i];
    std::printf("| %s | %.0f | %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f |\n", tiers[i], r.template_start_ms,
                fmt(r.ready_ms).c_str(), fmt(r.hello_ms).c_str(), pct(r.memcg_kib, 50), r.tpl_delta_kib, pct(r.private_kib, 50),
                pct(r.anon_kib, 50), pct(r.pss_kib, 50), r.filled ? r.fill_ms / r.filled : 0.0, r.tpl_kib / 1024.0);
  }
  std::printf("\n%d clones one at a time per tier, %d ms between a sandbox's return and the next request; memory: median "
              "of %d idle sandboxes after their Hello; fill: the time to fill the pool with those from none, per sandbox.\n",
              n, gap_ms, idle);
  // The issue 6 figure: the spawner's request (its cgroup and descriptors) to the ready record it
  // pushes into the pool's ring, everything between (template, VMM child, report) included.
  std::printf("\n**Clone to ready, end to end** (request → ready record, median):");
  for (size_t i = 0; i < tiers.size(); ++i)
    std::printf("%s %s %.2f ms", i ? "," : "", tiers[i], pct(res[i].ready_ms, 50));
  std::printf(".\n");
  return 0;
}
