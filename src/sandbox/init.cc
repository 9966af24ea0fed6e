// `sandpool init`: pid 1 inside a sandbox; runs the command, reaps orphans, reports how the command ended.
//
// Usage (internal): sandpool init [--status-fd N] [--respawn N] -- CMD ARGS...
// Runs as the unprivileged sandbox user under the sandbox's seccomp filter.
// The command runs in its own process; init forwards SIGTERM/SIGINT/SIGHUP to
// it, reaps every process that gets reparented to it, and when the command
// ends kills whatever is left in the pid namespace, writes "exit N" or
// "signal N" to the status fd, and exits with N (or 128+N). With --respawn N
// it restarts a command that died of a signal up to N times (the files in
// /mnt/data survive, as the session layer expects).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <initializer_list>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cli.h"

namespace sp {
namespace {

volatile sig_atomic_t g_child = 0;

void forward_signal(int sig) {
  if (g_child > 0) kill(g_child, sig);
}

pid_t start_command(char** cmd, const sigset_t& old_mask) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  execvp(cmd[0], cmd);
  std::fprintf(stderr, "sandpool init: cannot run %s: %s\n", cmd[0], std::strerror(errno));
  _exit(errno == ENOENT ? 127 : 126);
}

}  // namespace

int init_main(int argc, char** argv) {
  int status_fd = -1;
  int respawns = 0;
  int i = 1;
  for (; i < argc; ++i) {
    if (std::strcmp(argv[i], "--status-fd") == 0 && i + 1 < argc) {
      status_fd = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--respawn") == 0 && i + 1 < argc) {
      respawns = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--") == 0) {
      ++i;
      break;
    } else {
      break;
    }
  }
  if (i >= argc) {
    std::fprintf(stderr, "usage: sandpool init [--status-fd N] [--respawn N] -- CMD...\n");
    return 2;
  }
  char** cmd = argv + i;
  // Same uid as the command, so make our /proc entries (exe, fds, memory) unreadable to it.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  // A new session without a controlling terminal: TIOCSTI on an inherited tty fails.
  setsid();
  if (status_fd >= 0) fcntl(status_fd, F_SETFD, FD_CLOEXEC);

  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &sa, nullptr);
  sigset_t none, old;
  sigemptyset(&none);
  sigprocmask(SIG_BLOCK, &none, &old);

  g_child = start_command(cmd, old);
  if (g_child < 0) {
    std::fprintf(stderr, "sandpool init: fork: %s\n", std::strerror(errno));
    return 125;
  }
  int result = 0;
  for (;;) {
    int st = 0;
    pid_t pid = waitpid(-1, &st, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;  // ECHILD: nobody left
    }
    if (pid != g_child) continue;  // an orphan, now reaped
    if (WIFSIGNALED(st) && respawns > 0) {
      --respawns;
      g_child = start_command(cmd, old);
      if (g_child > 0) continue;
    }
    result = st;
    g_child = 0;
    kill(-1, SIGKILL);  // the rest of the pid namespace goes with the command
  }
  char line[32];
  int code;
  if (WIFSIGNALED(result)) {
    std::snprintf(line, sizeof line, "signal %d\n", WTERMSIG(result));
    code = 128 + WTERMSIG(result);
  } else {
    code = WEXITSTATUS(result);
    std::snprintf(line, sizeof line, "exit %d\n", code);
  }
  if (status_fd >= 0) {
    ssize_t n = write(status_fd, line, std::strlen(line));
    (void)n;
  }
  return code;
}

}  // namespace sp
