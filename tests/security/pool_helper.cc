// Test helper: starts a PoolSpawner (numpy template, echo agent) and lets run_probes.py drive its clones over stdin/stdout.
//
// Usage: pool_helper N  → prints "ready TEMPLATE_PID PID1 ... PIDN" once N clones are ready, then
// answers stdin lines: "exec I CODE" (runs CODE in clone I, prints its `result` repr on one line),
// "oom I" (prints the clone's cgroup OOM-kill count), "alive I" (1 while the clone runs),
// "wait-exit I" (1 once the clone has exited, waiting up to 5 s for it).
// At EOF it stops the pool normally; run_probes.py also SIGKILLs it to test die-with-server.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "sandbox/pool_spawner.h"

namespace {
int g_efd = -1;
void on_ready(void*) {
  uint64_t one = 1;
  ssize_t n = write(g_efd, &one, sizeof one);
  (void)n;
}
}  // namespace

int main(int argc, char** argv) {
  size_t n = argc > 1 ? static_cast<size_t>(std::atoi(argv[1])) : 2;
  g_efd = eventfd(0, EFD_CLOEXEC);
  sp::PoolTemplateConfig cfg;
  cfg.pool = "sectest";
  cfg.preload = "numpy";
  cfg.ready_target = static_cast<uint32_t>(n);
  cfg.data_bytes = 8 << 20;
  cfg.limits.memory_bytes = 96 << 20;
  cfg.limits.pids_max = 32;
  if (const char* agent = getenv("SANDPOOL_AGENT_PATH")) cfg.agent_path = agent;  // real agent instead of echo
  if (const char* pre = getenv("SANDPOOL_PRELOAD")) cfg.preload = pre;
  auto ps = sp::PoolSpawner::start(cfg, on_ready, nullptr);
  if (!ps.ok()) {
    std::printf("error %s\n", ps.error().message().c_str());
    return 1;
  }
  std::vector<sp::ReadySandbox> sbs;
  while (sbs.size() < n) {
    if (auto sb = (*ps)->take()) {
      sbs.push_back(std::move(*sb));
      continue;
    }
    pollfd p{g_efd, POLLIN, 0};
    poll(&p, 1, 60000);
    uint64_t v;
    ssize_t r = read(g_efd, &v, sizeof v);
    (void)r;
  }
  (*ps)->set_ready_target(0);
  std::printf("ready %d", (*ps)->template_pid());
  for (auto& sb : sbs) std::printf(" %d", sb.pid);
  std::printf("\n");
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
    char cmd[16];
    int idx = -1, off = 0;
    if (std::sscanf(line.c_str(), "%15s %d %n", cmd, &idx, &off) < 2 || idx < 0 || static_cast<size_t>(idx) >= n) {
      std::printf("bad command\n");
    } else if (!std::strcmp(cmd, "exec")) {
      std::string code = "exec:" + line.substr(static_cast<size_t>(off));
      for (auto& c : code)
        if (c == '\x01') c = '\n';  // newlines in code arrive as \x01
      int fd = sbs[static_cast<size_t>(idx)].agent_fd.get();
      std::string reply = "<eof>";
      if (send(fd, code.data(), code.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(code.size())) {
        pollfd p{fd, POLLIN, 0};
        char buf[8192];
        if (poll(&p, 1, 20000) == 1) {
          ssize_t r = recv(fd, buf, sizeof buf, 0);
          if (r > 0) reply.assign(buf, static_cast<size_t>(r));
        } else {
          reply = "<timeout>";
        }
      }
      for (auto& c : reply)
        if (c == '\n') c = ' ';
      std::printf("%s\n", reply.c_str());
    } else if (!std::strcmp(cmd, "read")) {  // prints the first bytes the clone sends, hex (the agent's Hello)
      int fd = sbs[static_cast<size_t>(idx)].agent_fd.get();
      pollfd p{fd, POLLIN, 0};
      unsigned char buf[64];
      ssize_t r = poll(&p, 1, 20000) == 1 ? recv(fd, buf, sizeof buf, 0) : -1;
      for (ssize_t k = 0; k < r; ++k) std::printf("%02x", buf[k]);
      std::printf("\n");
    } else if (!std::strcmp(cmd, "oom")) {
      std::printf("%llu\n", static_cast<unsigned long long>(sbs[static_cast<size_t>(idx)].cgroup.oom_kills()));
    } else if (!std::strcmp(cmd, "alive")) {
      pollfd p{sbs[static_cast<size_t>(idx)].pidfd.get(), POLLIN, 0};
      std::printf("%d\n", poll(&p, 1, 0) == 0 ? 1 : 0);
    } else if (!std::strcmp(cmd, "wait-exit")) {  // waits (≤ 5 s) for the clone's exit; 1 = exited
      pollfd p{sbs[static_cast<size_t>(idx)].pidfd.get(), POLLIN, 0};
      std::printf("%d\n", poll(&p, 1, 5000) == 1 ? 1 : 0);
    } else {
      std::printf("bad command\n");
    }
    std::fflush(stdout);
  }
  for (auto& sb : sbs) (*ps)->give_back(std::move(sb));
  return 0;
}
