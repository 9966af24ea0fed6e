// Test helper: starts a PoolSpawner (numpy template, echo agent) and lets run_probes.py drive its clones over stdin/stdout.
//
// Usage: pool_helper N  → prints "ready TEMPLATE_PID PID1 ... PIDN" once N clones are ready, then
// answers stdin lines: "exec I CODE" (runs CODE in clone I, prints its `result` repr on one line),
// "oom I" (prints the clone's cgroup OOM-kill count), "alive I" (1 while the clone runs),
// "wait-exit I" (1 once the clone has exited, waiting up to 5 s for it),
// "kill-template N" (SIGKILL the template, take N clones of its successor and keep them;
// prints "<taken> <old template pid> <new template pid> <clone pids...>").
// At EOF it stops the pool normally; run_probes.py also SIGKILLs it to test die-with-server.
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
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

pid_t parent_of(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return -1;
  char buf[512] = {0};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* rp = std::strrchr(buf, ')');
  int ppid = -1;
  if (n > 0 && rp) std::sscanf(rp + 2, "%*c %d", &ppid);
  return ppid;
}
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
  std::vector<sp::ReadySandbox> fresh;  // clones of a restarted template (kill-template)
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
    } else if (!std::strcmp(cmd, "kill-template")) {  // SIGKILL the template, then take I fresh clones
      pid_t tpl = (*ps)->template_pid();
      int tpl_fd = static_cast<int>(syscall(SYS_pidfd_open, tpl, 0));
      kill(tpl, SIGKILL);
      pollfd tp{tpl_fd, POLLIN, 0};
      poll(&tp, 1, 5000);  // gone before we look at the ring
      close(tpl_fd);
      (*ps)->set_ready_target(static_cast<uint32_t>(idx));
      size_t got = 0;
      for (int waits = 0; got < static_cast<size_t>(idx) && waits < 200;) {
        if (auto sb = (*ps)->take()) {
          pid_t now_tpl = (*ps)->template_pid();
          // Only clones of the new template count: the old one's may still be dying (PDEATHSIG).
          if (!sb->alive() || now_tpl == tpl || parent_of(sb->pid) != now_tpl) {
            (*ps)->give_back(std::move(*sb));
            continue;
          }
          fresh.push_back(std::move(*sb));
          ++got;
          continue;
        }
        pollfd p{g_efd, POLLIN, 0};
        if (poll(&p, 1, 30000) != 1) break;
        uint64_t v;
        ssize_t r = read(g_efd, &v, sizeof v);
        (void)r;
        ++waits;
      }
      (*ps)->set_ready_target(0);
      std::printf("%zu %d %d", got, tpl, (*ps)->template_pid());
      for (auto& f : fresh) std::printf(" %d", f.pid);
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
