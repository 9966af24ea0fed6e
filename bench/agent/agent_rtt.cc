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
  }
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
  return 0;
}
