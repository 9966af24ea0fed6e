// What loading each of our seccomp filters costs (the last isolation step of every clone; a pool's
// VMM child loads its filter before its request and only a small lock after it): the program's
// length, and seccomp(2)'s time in a fresh child, median of --n.
//
// Usage: seccomp_load_bench [--n 40]     (any user; the children set no_new_privs)
// The kernel's cost is mostly its action cache (seccomp_cache_prepare): it runs the program once per
// syscall number of each architecture to find the always-allowed ones, so it grows with how many
// instructions a syscall number walks before its verdict (a linear chain: the whole allowlist).
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "sandbox/seccomp_policy.h"
#include "vmm/pool_template.h"

namespace {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// One load in a forked child (a filter cannot be unloaded); the child sends its time back.
double load_once(const sp::SeccompProgram& p) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    sock_fprog prog = p.prog();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(1);
    uint64_t t0 = now_ns();
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) _exit(1);
    uint64_t dt = now_ns() - t0;
    _exit(write(fds[1], &dt, sizeof dt) == sizeof dt ? 0 : 1);
  }
  close(fds[1]);
  uint64_t dt = 0;
  ssize_t got = pid > 0 ? read(fds[0], &dt, sizeof dt) : -1;
  close(fds[0]);
  if (pid > 0) waitpid(pid, nullptr, 0);
  return got == sizeof dt ? static_cast<double>(dt) / 1e3 : -1;
}

void report(const char* name, const sp::Result<sp::SeccompProgram>& p, int n) {
  if (!p.ok()) {
    std::printf("| %s | compile failed: %s | | |\n", name, p.error().message().c_str());
    return;
  }
  std::vector<double> us;
  for (int i = 0; i < n; ++i)
    if (double v = load_once(p.value()); v >= 0) us.push_back(v);
  if (us.empty()) {
    std::printf("| %s | %zu | load failed | |\n", name, p.value().insns.size());
    return;
  }
  std::sort(us.begin(), us.end());
  std::printf("| %s | %zu | %.1f | %.1f |\n", name, p.value().insns.size(), us[us.size() / 2], us[us.size() * 9 / 10]);
}

}  // namespace

int main(int argc, char** argv) {
  int n = 40;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--n") == 0) n = std::max(1, std::atoi(argv[i + 1]));
  std::printf("| filter | instructions | seccomp(2) median µs | p90 µs |\n|---|---:|---:|---:|\n");
  report("process tier (sandboxed code)", sp::compile_seccomp_policy(), n);
  report("micro-VM tier (the VMM process)", sp::vmm::compile_vmm_seccomp_policy(), n);
  report("micro-VM pool: the VMM filter loaded ahead (+ the isolation's last calls)", sp::vmm::compile_vmm_ahead_policy(), n);
  report("micro-VM pool: the lock loaded at the request", sp::vmm::compile_vmm_isolation_lock(), n);
  return 0;
}
