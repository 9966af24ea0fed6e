// agent_rtt: C++ host <-> Python agent round trip of one execute over a socketpair;
// prints percentiles. Not a Google Benchmark: the distribution is the result.
//
//   agent_rtt [--agent PATH] [--python /usr/bin/python3] [--n 20000] [--warmup 2000]
//             [--code 'print(1)'] [--expect '1\n'] [--agent-arg ARG]...
// Pinning is left to the caller (taskset), so the same binary measures both placements.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agent/host_channel.h"

using namespace sp::agent;

namespace {

double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Time a process has spent on a CPU, in microseconds (/proc/PID/schedstat, ns), or -1.
double cpu_us_of(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/schedstat";
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return -1;
  unsigned long long ns = 0;
  int got = std::fscanf(f, "%llu", &ns);
  std::fclose(f);
  return got == 1 ? static_cast<double>(ns) / 1000 : -1;
}

double self_cpu_us() { return cpu_us_of(getpid()); }

int fail(const char* what, const sp::Error& e) {
  std::fprintf(stderr, "agent_rtt: %s: %s\n", what, e.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  LocalAgentOptions opts;
  opts.script = SANDPOOL_SOURCE_ROOT "/src/agent/python/sandpool_agent.py";
  int n = 20000, warmup = 2000;
  std::string code = "print(1)", expect = "1\n";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--agent") opts.script = argv[i + 1];
    else if (k == "--python") opts.python = argv[i + 1];
    else if (k == "--n") n = std::atoi(argv[i + 1]);
    else if (k == "--warmup") warmup = std::atoi(argv[i + 1]);
    else if (k == "--code") code = argv[i + 1];
    else if (k == "--expect") expect = argv[i + 1];
    else if (k == "--agent-arg") opts.extra_args.push_back(argv[i + 1]);
    else {
      std::fprintf(stderr, "agent_rtt: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  char root[] = "/tmp/sandpool-rtt-XXXXXX";
  if (!mkdtemp(root)) return 1;
  opts.root_dir = root;

  double t0 = now_us();
  auto agent = spawn_local_agent(opts);
  if (!agent.ok()) return fail("spawn", agent.error());
  auto hello = agent->channel.wait_hello(30'000);
  if (!hello.ok()) return fail("hello", hello.error());
  double hello_us = now_us() - t0;
  auto hello_msg = decode_hello(hello->view());
  if (!hello_msg.ok()) return fail("hello", hello_msg.error());
  pid_t worker = static_cast<pid_t>(hello_msg->pid);
  double agent_cpu0 = 0, host_cpu0 = 0;

  ExecuteRequest req;
  req.code = code;
  req.timeout_ms = 60'000;
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(n));
  for (int i = 0; i < warmup + n; ++i) {
    double a = now_us();
    auto f = agent->channel.execute(req, 60'000);
    double b = now_us();
    if (!f.ok()) return fail("execute", f.error());
    auto rep = decode_execute_reply(f->view());
    if (!rep.ok()) return fail("reply", rep.error());
    if (rep->status != ExecStatus::kSuccess || rep->stdout_bytes != expect) {
      std::fprintf(stderr, "agent_rtt: unexpected reply: status %s stdout '%.*s'\n",
                   exec_status_name(rep->status), static_cast<int>(rep->stdout_bytes.size()),
                   rep->stdout_bytes.data());
      return 1;
    }
    if (i >= warmup) samples.push_back(b - a);
    if (i + 1 == warmup) {
      agent_cpu0 = cpu_us_of(worker);
      host_cpu0 = self_cpu_us();
    }
  }
  double agent_cpu = cpu_us_of(worker) - agent_cpu0;
  double host_cpu = self_cpu_us() - host_cpu0;
  agent->channel.close();  // EOF: the agent exits 0
  int status = 0;
  ::waitpid(agent->pid, &status, 0);
  ::rmdir(root);

  std::sort(samples.begin(), samples.end());
  auto pct = [&](double p) { return samples[static_cast<size_t>(p * (samples.size() - 1))]; };
  double sum = 0;
  for (double s : samples) sum += s;
  std::printf("code=%s n=%d warmup=%d first_hello_ms=%.1f\n", code.c_str(), n, warmup,
              hello_us / 1000);
  std::printf("median_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f mean_us=%.1f max_us=%.1f\n",
              pct(0.5), pct(0.9), pct(0.99), pct(0.999), sum / samples.size(), samples.back());
  // CPU time per cell does not depend on what else runs on the machine.
  std::printf("agent_cpu_us_per_cell=%.1f host_cpu_us_per_cell=%.1f\n", agent_cpu / n,
              host_cpu / n);
  return 0;
}
