// End-to-end benchmark of the process tier's warm-template cloning, with bubblewrap as the peer; not a microbenchmark.
//
// Usage: clone_bench [--n 200] [--refill 300] [--pending 2] [--templates 1] [--bwrap 20] [--favordynmods] [--no-netns-ahead] [--spawn-weight 1] [--no-reap-hold] [--prepare-during-clone] [--memory shared|huge|plain] [--preload numpy,pandas,matplotlib.pyplot]
// Prints a markdown report on stdout. Needs root (cgroups). Measures, in one run:
//  1. clone-to-ready: request sent to the template → the clone's "isolated" record read by
//     the spawner, one clone at a time (target 1), n samples; plus ready → first echo round trip;
//  2. refill throughput: ready target raised from 0 to --refill; time until all are ready;
//  3. memory per idle clone as the cgroups account it (kernel memory included): the clones'
//     own memcgs, plus the template memcg's growth (fork-time page tables are charged there);
//  4. the peer: bwrap --unshare-all … python3 -c 'import numpy, pandas, matplotlib' to exit.
#include <poll.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sandbox/pool_spawner.h"

extern char** environ;

namespace {

double now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int g_efd = -1;
void on_ready(void*) {
  uint64_t one = 1;
  ssize_t n = write(g_efd, &one, sizeof one);
  (void)n;
}
void wait_ready() {
  pollfd p{g_efd, POLLIN, 0};
  poll(&p, 1, 60000);
  uint64_t v;
  ssize_t n = read(g_efd, &v, sizeof v);
  (void)n;
}

double echo_rtt_ms(int fd) {
  double t0 = now_ms();
  if (send(fd, "pid", 3, 0) != 3) return -1;
  char buf[256];
  if (recv(fd, buf, sizeof buf, 0) <= 0) return -1;
  return now_ms() - t0;
}

double run_once(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  double t0 = now_ms();
  pid_t pid;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int st;
  waitpid(pid, &st, 0);
  double dt = now_ms() - t0;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? dt : -dt;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 200, refill = 300, pending = 2, bwrap_n = 20, templates = 1, spawn_weight = -1;
  std::string preload = "numpy,pandas,matplotlib.pyplot";
  std::string sandpool;  // --sandpool PATH: also time our exec path (sandbox-run), cold
  std::string agent;     // --agent DIR: clones run the real sandpool_agent (no echo round trip then)
  bool favor = false, netns_ahead = true, reap_hold = true, prepare_during = false;
  sp::TemplateMemory memory = sp::TemplateMemory::kShared;  // the server's default (--template-memory)
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : "0";
    if (!std::strcmp(a, "--favordynmods")) { favor = true; continue; }
    if (!std::strcmp(a, "--no-netns-ahead")) { netns_ahead = false; continue; }
    if (!std::strcmp(a, "--no-reap-hold")) { reap_hold = false; continue; }
    if (!std::strcmp(a, "--prepare-during-clone")) { prepare_during = true; continue; }
    if (!std::strcmp(a, "--n")) n = std::atoi(v);
    else if (!std::strcmp(a, "--memory")) {
      auto m = sp::parse_template_memory(v);
      if (!m) { std::fprintf(stderr, "clone_bench: --memory wants shared, huge or plain\n"); return 2; }
      memory = *m;
    }
    else if (!std::strcmp(a, "--refill")) refill = std::atoi(v);
    else if (!std::strcmp(a, "--pending")) pending = std::atoi(v);
    else if (!std::strcmp(a, "--bwrap")) bwrap_n = std::atoi(v);
    else if (!std::strcmp(a, "--templates")) templates = std::atoi(v);
    else if (!std::strcmp(a, "--spawn-weight")) spawn_weight = std::atoi(v);
    else if (!std::strcmp(a, "--preload")) preload = v;
    else if (!std::strcmp(a, "--sandpool")) sandpool = v;
    else if (!std::strcmp(a, "--agent")) agent = v;
    else { std::fprintf(stderr, "clone_bench: unknown option %s\n", a); return 2; }
    ++i;
  }
  if (geteuid() != 0) {
    std::fprintf(stderr, "clone_bench: needs root (cgroups)\n");
    return 77;
  }
  g_efd = eventfd(0, EFD_CLOEXEC);
  bool favor_was_on = false;
  if (favor) {
    auto r = sp::cgroup_set_favor_dynmods(true);
    if (!r.ok()) {
      std::fprintf(stderr, "clone_bench: favordynmods: %s\n", r.error().message().c_str());
      return 1;
    }
    favor_was_on = *r;
  }
  sp::PoolTemplateConfig cfg;
  cfg.pool = "bench";
  cfg.preload = preload;
  cfg.ready_target = 0;
  cfg.max_pending = static_cast<uint32_t>(pending);
  cfg.templates = static_cast<uint32_t>(templates);
  cfg.limits.memory_bytes = 512ull << 20;
  cfg.limits.cpu_millis = 0;
  cfg.agent_path = agent;
  cfg.netns_ahead = netns_ahead;
  cfg.reap_hold = reap_hold;
  cfg.prepare_next_during_clone = prepare_during;
  cfg.memory = memory;
  if (spawn_weight >= 0) cfg.spawn_cpu_weight = static_cast<uint32_t>(spawn_weight);
  double t_start = now_ms();
  auto ps = sp::PoolSpawner::start(cfg, on_ready, nullptr);
  if (!ps.ok()) {
    std::fprintf(stderr, "clone_bench: %s\n", ps.error().message().c_str());
    return 1;
  }
  double template_start_ms = now_ms() - t_start;
  sp::PoolSpawner& pool = **ps;

  // 1. clone-to-ready, one at a time.
  std::vector<double> ready_ms, fork_ms, rtt_ms;
  pool.set_ready_target(1);
  for (int i = 0; i < n + 5; ++i) {
    std::optional<sp::ReadySandbox> sb;
    while (!(sb = pool.take())) wait_ready();
    if (i >= 5) {  // the first few warm the page cache and the template's allocator
      ready_ms.push_back(static_cast<double>(sb->ready_ns) / 1e6);
      fork_ms.push_back(static_cast<double>(sb->fork_ns) / 1e6);
      sb->foreground();
      if (agent.empty()) rtt_ms.push_back(echo_rtt_ms(sb->agent_fd.get()));
    }
    while (!pool.give_back(std::move(*sb))) sched_yield();
  }
  pool.set_ready_target(0);
  // Drain the refill that may be in flight, and let the reaper finish.
  for (int spins = 0; spins < 200; ++spins) {
    while (auto sb = pool.take()) pool.give_back(std::move(*sb));
    if (pool.stats().reaped.load() + 0 >= pool.stats().spawned.load()) break;
    usleep(5000);
  }
  // 2. refill throughput and 3. memory of idle clones.
  uint64_t tpl_mem_before = pool.template_memory();
  uint64_t spawned0 = pool.stats().spawned.load();
  double t0 = now_ms();
  pool.set_ready_target(static_cast<uint32_t>(refill));
  while (pool.ready_count() < static_cast<size_t>(refill)) wait_ready();
  double refill_ms = now_ms() - t0;
  uint64_t spawned = pool.stats().spawned.load() - spawned0;
  uint64_t tpl_mem_after = pool.template_memory();
  std::vector<sp::ReadySandbox> idle;
  pool.set_ready_target(0);
  while (auto sb = pool.take()) idle.push_back(std::move(*sb));
  std::vector<double> mem_kib;
  for (auto& sb : idle) mem_kib.push_back(static_cast<double>(sb.cgroup.memory_current()) / 1024.0);
  double tpl_growth_kib = static_cast<double>(tpl_mem_after - tpl_mem_before) / 1024.0 / static_cast<double>(idle.size());
  for (auto& sb : idle)
    while (!pool.give_back(std::move(sb))) sched_yield();
  ps->reset();
  if (favor && !favor_was_on) (void)sp::cgroup_set_favor_dynmods(false);

  // 4. the peer.
  std::vector<std::string> bw = {"/usr/bin/bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                                 "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink",
                                 "usr/bin", "/bin", "--ro-bind", "/etc/alternatives", "/etc/alternatives",
                                 "--ro-bind-try", "/etc/matplotlibrc", "/etc/matplotlibrc", "--proc", "/proc", "--dev",
                                 "/dev", "--tmpfs", "/tmp", "--setenv", "MPLBACKEND", "Agg", "--setenv",
                                 "MPLCONFIGDIR", "/tmp", "/usr/bin/python3", "-c", "import numpy, pandas, matplotlib"};
  std::vector<double> bw_ms;
  int bw_fail = 0;
  for (int i = 0; i < bwrap_n; ++i) {
    double t = run_once(bw);
    if (t < 0) ++bw_fail;
    else bw_ms.push_back(t);
  }

  std::vector<double> ours_true, ours_py;
  if (!sandpool.empty()) {
    for (int i = 0; i < bwrap_n; ++i) {
      ours_true.push_back(run_once({sandpool, "sandbox-run", "--", "/bin/true"}));
      ours_py.push_back(run_once({sandpool, "sandbox-run", "--", "/usr/bin/python3", "-c", "import numpy, pandas, matplotlib"}));
    }
  }
  std::vector<std::string> bw_true(bw.begin(), bw.end() - 3);
  bw_true.push_back("/bin/true");
  std::vector<double> bw_true_ms;
  for (int i = 0; i < bwrap_n; ++i) bw_true_ms.push_back(run_once(bw_true));

  double med = pct(ready_ms, 50);
  std::printf("## Process tier: warm-template clones (preload: %s; cgroup2 favordynmods %s; netns made ahead: %s; "
              "spawn cpu weight %u; teardown waits for forks: %s; next clone prepared: %s; template memory: %s; agent: %s)\n\n",
              preload.c_str(), favor ? "on for this run" : "off", netns_ahead ? "yes" : "no", cfg.spawn_cpu_weight,
              reap_hold ? "yes" : "no", prepare_during ? "during the clone" : "after its ready record",
              sp::template_memory_name(memory),
              agent.empty() ? "echo stand-in" : "sandpool_agent.serve (supervisor + forked worker)");
  std::printf("template start (import + warm-up, once per pool): %.0f ms\n\n", template_start_ms);
  std::printf("| measure | n | median | p90 | p99 | max | target |\n|---|---:|---:|---:|---:|---:|---|\n");
  std::printf("| clone-to-ready (request → isolated, ms) | %zu | %.2f | %.2f | %.2f | %.2f | median ≤ 3, p99 ≤ 10 |\n",
              ready_ms.size(), med, pct(ready_ms, 90), pct(ready_ms, 99), pct(ready_ms, 100));
  std::printf("| of which: fork() in the template (page-table copy, wall ms) | %zu | %.2f | %.2f | %.2f | %.2f | — |\n",
              fork_ms.size(), pct(fork_ms, 50), pct(fork_ms, 90), pct(fork_ms, 99), pct(fork_ms, 100));
  std::printf("| ready → first echo round trip (ms) | %zu | %.3f | %.3f | %.3f | %.3f | — |\n", rtt_ms.size(),
              pct(rtt_ms, 50), pct(rtt_ms, 90), pct(rtt_ms, 99), pct(rtt_ms, 100));
  std::printf("| peer: bwrap --unshare-all python3 -c 'import numpy, pandas, matplotlib' (ms) | %zu | %.1f | %.1f | %.1f | %.1f | ours ≥ 100× faster |\n",
              bw_ms.size(), pct(bw_ms, 50), pct(bw_ms, 90), pct(bw_ms, 99), pct(bw_ms, 100));
  std::printf("| peer: bwrap --unshare-all /bin/true (ms) | %zu | %.1f | %.1f | %.1f | %.1f | — |\n", bw_true_ms.size(),
              pct(bw_true_ms, 50), pct(bw_true_ms, 90), pct(bw_true_ms, 99), pct(bw_true_ms, 100));
  if (!ours_true.empty()) {
    std::printf("| ours, exec path: sandpool sandbox-run -- /bin/true (ms, whole CLI run) | %zu | %.1f | %.1f | %.1f | %.1f | — |\n",
                ours_true.size(), pct(ours_true, 50), pct(ours_true, 90), pct(ours_true, 99), pct(ours_true, 100));
    std::printf("| ours, exec path: sandbox-run -- python3 -c 'import numpy, pandas, matplotlib' (ms) | %zu | %.1f | %.1f | %.1f | %.1f | — |\n",
                ours_py.size(), pct(ours_py, 50), pct(ours_py, 90), pct(ours_py, 99), pct(ours_py, 100));
  }
  std::printf("\nratio peer/ours (medians, bwrap+import vs clone-to-ready): **%.0f×** (target ≥ 100×)%s\n\n",
              pct(bw_ms, 50) / med, bw_fail ? " (some bwrap runs failed)" : "");
  std::printf("refill: %llu clones ready in %.0f ms, %d template(s), up to %d isolating at once → **%.0f sandboxes/s** (target ≥ 300)\n\n",
              static_cast<unsigned long long>(spawned), refill_ms, templates, pending,
              static_cast<double>(spawned) * 1000.0 / refill_ms);
  std::printf("memory per idle clone (%zu idle): own memcg median %.0f KiB (p90 %.0f, max %.0f) + template memcg growth "
              "%.0f KiB per clone = **%.2f MiB** (target ≤ 3 MiB)\n",
              mem_kib.size(), pct(mem_kib, 50), pct(mem_kib, 90), pct(mem_kib, 100), tpl_growth_kib,
              (pct(mem_kib, 50) + tpl_growth_kib) / 1024.0);
  return 0;
}
