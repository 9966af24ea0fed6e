// Tests PoolSpawner end to end with a numpy-only template and the echo stand-in agent; passes with a message when not root.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "sandbox/pool_spawner.h"

namespace {

std::string ask(int fd, const std::string& msg) {
  // MSG_NOSIGNAL: a clone that died (with its template) answers "<send failed>", not SIGPIPE.
  if (send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) return "<send failed>";
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 10000) != 1) return "<timeout>";
  char buf[4096];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "<eof>";
}

char process_state(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return 'X';
  char buf[512] = {0};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* rp = std::strrchr(buf, ')');
  return n > 0 && rp && rp[1] ? rp[2] : 'X';
}

void on_ready(void* ctx) {
  uint64_t one = 1;
  ssize_t n = write(*static_cast<int*>(ctx), &one, sizeof one);
  (void)n;
}

// Waits (on the eventfd the spawner kicks) until `n` clones can be taken.
std::vector<sp::ReadySandbox> take_n(sp::PoolSpawner& ps, int efd, size_t n) {
  std::vector<sp::ReadySandbox> out;
  while (out.size() < n) {
    if (auto sb = ps.take()) {
      out.push_back(std::move(*sb));
      continue;
    }
    pollfd p{efd, POLLIN, 0};
    if (poll(&p, 1, 30000) != 1) break;
    uint64_t v;
    ssize_t r = read(efd, &v, sizeof v);
    (void)r;
  }
  return out;
}

// Root is needed for cgroups and host uid ranges; otherwise the test passes with a message.
bool as_root() {
  if (geteuid() == 0) return true;
  MESSAGE("skipped: needs root (cgroups, host uid ranges)");
  return false;
}

// A started spawner and the eventfd its ready callback kicks; stopped, then closed, at scope end.
struct Started {
  explicit Started(const sp::PoolTemplateConfig& cfg) {
    auto r = sp::PoolSpawner::start(cfg, on_ready, &efd);
    if (!r.ok()) close(efd);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    ps = std::move(r.value());
  }
  Started(const Started&) = delete;  // the spawner holds &efd
  Started& operator=(const Started&) = delete;
  ~Started() {
    ps.reset();
    close(efd);
  }
  std::vector<sp::ReadySandbox> take(size_t n) { return take_n(*ps, efd, n); }

  int efd = eventfd(0, EFD_CLOEXEC);
  std::unique_ptr<sp::PoolSpawner> ps;
};

}  // namespace

TEST_CASE("pool spawner: clones are isolated from the host and from each other, and are reaped") {
  if (!as_root()) return;
  sp::PoolTemplateConfig cfg;
  cfg.pool = "unittest";
  cfg.preload = "numpy";
  cfg.ready_target = 3;
  cfg.limits.memory_bytes = 128 << 20;
  Started s(cfg);
  auto sbs = s.take(3);
  REQUIRE(sbs.size() == 3);
  std::set<std::string> uids, seeds;
  for (auto& sb : sbs) {
    CHECK(sb.pid > 0);
    CHECK(sb.pidfd.valid());
    CHECK(sb.cgroup.valid());
    CHECK(sb.ready_ns > 0);
    std::string who = ask(sb.agent_fd.get(), "pid");  // "<pid> <uid> <hostname> <cwd>"
    CHECK(who.rfind("1 ", 0) == 0);                    // pid 1 of its own pid namespace
    CHECK(who.find(" sandbox /mnt/data") != std::string::npos);
    uids.insert(who.substr(2, who.find(' ', 2) - 2));
    CHECK(ask(sb.agent_fd.get(), "exec:import os; result = sorted(os.listdir('/'))") ==
          "['bin', 'dev', 'etc', 'lib', 'lib32', 'lib64', 'mnt', 'proc', 'sbin', 'tmp', 'usr']");
    CHECK(ask(sb.agent_fd.get(), "exec:import os; result = os.path.exists('/etc/shadow') or os.path.exists('/work')") ==
          "False");
    CHECK(ask(sb.agent_fd.get(), "exec:import os; result = os.listdir('/sys/class/net') if os.path.exists('/sys') "
                                 "else open('/proc/net/dev').read().count(':')") == "1");
    CHECK(ask(sb.agent_fd.get(), "exec:import os\ntry:\n os.unshare(0)\nexcept AttributeError:\n import ctypes; "
                                 "result = ctypes.CDLL(None, use_errno=True).unshare(0x10000000), ctypes.get_errno()") ==
          "(-1, 1)");  // unshare(CLONE_NEWUSER) -> EPERM (seccomp)
    seeds.insert(ask(sb.agent_fd.get(), "exec:import numpy; result = int(numpy.random.randint(1 << 30))"));
  }
  CHECK(uids.size() == 3);   // a distinct unprivileged host uid per clone
  CHECK(uids.count("0") == 0);
  CHECK(seeds.size() == 3);  // numpy's global generator was reseeded in each clone
  // Files are private: what one clone writes in /mnt/data the next one does not see.
  CHECK(ask(sbs[0].agent_fd.get(), "exec:open('/mnt/data/mine','w').write('x'); result = 1") == "1");
  CHECK(ask(sbs[1].agent_fd.get(), "exec:import os; result = os.listdir('/mnt/data')") == "[]");
  CHECK(s.ps->stats().spawned.load() >= 3);
  // The refill kicked in after the takes; return everything and let the reaper work.
  std::vector<pid_t> pids;
  for (auto& sb : sbs) {
    pids.push_back(sb.pid);
    CHECK(s.ps->give_back(std::move(sb)));
  }
  for (int spins = 0; s.ps->stats().reaped.load() < 3 && spins < 2000000; ++spins) sched_yield();
  CHECK(s.ps->stats().reaped.load() == 3);
  // Gone, or a zombie until the template's waitpid (the reaper waited for exit, not for that).
  for (pid_t pid : pids) CHECK(process_state(pid) != 'S');
  for (pid_t pid : pids) CHECK(process_state(pid) != 'R');
}

namespace {

// The CPU weight of `pid`'s cgroup in cgroup2 units (v1 cpu.shares converted), or -1.
int cpu_weight_of(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/cgroup").c_str(), "r");
  if (!f) return -1;
  char line[1024];
  std::string v1, v2;
  while (std::fgets(line, sizeof line, f)) {
    std::string l(line);
    if (!l.empty() && l.back() == '\n') l.pop_back();
    size_t a = l.find(':'), b = l.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrls = "," + l.substr(a + 1, b - a - 1) + ",";
    if (ctrls.find(",cpu,") != std::string::npos) v1 = l.substr(b + 1);
    if (ctrls == ",," ) v2 = l.substr(b + 1);
  }
  std::fclose(f);
  auto read_int = [](const std::string& path) {
    FILE* g = std::fopen(path.c_str(), "r");
    if (!g) return -1;
    int v = -1;
    if (std::fscanf(g, "%d", &v) != 1) v = -1;
    std::fclose(g);
    return v;
  };
  if (!v1.empty()) {
    int shares = read_int("/sys/fs/cgroup/cpu" + v1 + "/cpu.shares");
    return shares < 0 ? -1 : shares * 100 / 1024;
  }
  return v2.empty() ? -1 : read_int("/sys/fs/cgroup" + v2 + "/cpu.weight");
}

}  // namespace

TEST_CASE("pool spawner: spawning runs at the background CPU weight until foreground()") {
  if (!as_root()) return;
  sp::PoolTemplateConfig cfg;
  cfg.pool = "unitweight";
  cfg.preload = "";
  cfg.ready_target = 1;
  cfg.spawn_cpu_weight = 1;
  Started s(cfg);
  auto sbs = s.take(1);
  REQUIRE(sbs.size() == 1);
  sp::ReadySandbox& sb = sbs[0];
  CHECK(sb.fork_ns > 0);
  CHECK(sb.fork_ns < sb.ready_ns);
  int before = cpu_weight_of(sb.pid);
  if (before < 0) {
    MESSAGE("skipped: no cpu controller");
  } else {
    CHECK(before <= 1);  // shares 10 on v1 read back as weight 0
    CHECK(cpu_weight_of(s.ps->template_pid()) <= 1);
    CHECK(sb.background);
    sb.foreground();
    CHECK_FALSE(sb.background);
    CHECK(cpu_weight_of(sb.pid) == 100);
  }
  CHECK(ask(sb.agent_fd.get(), "pid").rfind("1 ", 0) == 0);
  CHECK(s.ps->give_back(std::move(sb)));
}

namespace {

// The host offers MADV_COLLAPSE (Linux ≥ 6.1) and THP is not "never".
bool host_collapses() {
  FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (!f) return false;
  char buf[128] = {0};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  if (n == 0 || std::strstr(buf, "[never]")) return false;
  utsname u{};
  int major = 0, minor = 0;
  if (uname(&u) != 0 || std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 1);
}

pid_t parent_of(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return -1;
  char buf[512] = {0};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* rp = std::strrchr(buf, ')');
  int ppid = -1;
  if (n == 0 || !rp || std::sscanf(rp + 2, "%*c %d", &ppid) != 1) return -1;
  return ppid;
}

// AnonHugePages of `pid` in KiB, -1 when unreadable.
long anon_huge_kib(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/smaps_rollup").c_str(), "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "AnonHugePages: %ld", &kib) == 1) break;
  std::fclose(f);
  return kib;
}

// The "lo-hi" ranges of `pid`'s mappings whose path starts with `prefix`, with their permissions.
std::vector<std::pair<std::string, std::string>> mappings_of(pid_t pid, const std::string& prefix) {
  std::vector<std::pair<std::string, std::string>> out;
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/maps").c_str(), "r");
  if (!f) return out;
  char line[1024];
  while (std::fgets(line, sizeof line, f)) {
    char range[64] = {0}, perms[8] = {0};
    int path_at = 0;
    if (std::sscanf(line, "%63s %7s %*s %*s %*s %n", range, perms, &path_at) < 2 || path_at == 0) continue;
    if (std::strncmp(line + path_at, prefix.c_str(), prefix.size()) == 0) out.emplace_back(range, perms);
  }
  std::fclose(f);
  return out;
}

}  // namespace

TEST_CASE("pool spawner: the template's memory (sealed memfd, huge pages or plain) is shared copy-on-write 4 KiB at a time, clones stay apart") {
  if (!as_root()) return;
  const bool collapses = host_collapses();
  if (!collapses) MESSAGE("THP is off or the kernel is older than 6.1: the template runs without huge pages");
  for (sp::TemplateMemory memory : {sp::TemplateMemory::kShared, sp::TemplateMemory::kHugePages, sp::TemplateMemory::kPlain}) {
    const bool huge = memory == sp::TemplateMemory::kHugePages;
    const std::string mode = sp::template_memory_name(memory);
    CAPTURE(mode);
    sp::PoolTemplateConfig cfg;
    cfg.pool = "unittest";
    cfg.preload = "numpy";
    cfg.ready_target = 2;
    cfg.memory = memory;
    cfg.limits.memory_bytes = 128 << 20;
    Started s(cfg);
    auto sbs = s.take(2);
    REQUIRE(sbs.size() == 2);
    // The template (the clones' parent) maps its memory with huge pages, or not at all.
    const pid_t tpl = parent_of(sbs[0].pid);
    long huge_kib = anon_huge_kib(tpl);
    if (huge && collapses) CHECK(huge_kib >= 2048);
    if (!huge) CHECK(huge_kib == 0);
    // Shared: the template's objects live in its memfd, mapped privately by it and by the clones
    // (they inherit the mappings), and the file cannot be changed, not even by host root.
    // So do the libraries' data and RELRO pages the loader or the imports wrote (RELRO read-only).
    const auto in_memfd = mappings_of(tpl, "/memfd:sandpool-template");
    CHECK(in_memfd.empty() == (memory != sp::TemplateMemory::kShared));
    size_t read_only = 0;
    for (const auto& [range, perms] : in_memfd) {
      CHECK((perms == "rw-p" || perms == "r--p"));
      read_only += perms == "r--p";
    }
    CHECK((read_only > 0) == (memory == sp::TemplateMemory::kShared));
    CHECK(mappings_of(sbs[1].pid, "/memfd:sandpool-template").size() == in_memfd.size());
    if (!in_memfd.empty()) {
      unsigned long lo = 0, hi = 0;
      REQUIRE(std::sscanf(in_memfd[0].first.c_str(), "%lx-%lx", &lo, &hi) == 2);
      char name[64];
      std::snprintf(name, sizeof name, "%lx-%lx", lo, hi);  // map_files names have no zero padding
      std::string path = "/proc/" + std::to_string(tpl) + "/map_files/" + name;
      int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
      const int open_errno = errno;
      REQUIRE_MESSAGE(fd >= 0, path << ": " << std::string(std::strerror(open_errno)));
      CHECK((fcntl(fd, F_GET_SEALS) & F_SEAL_WRITE) != 0);
      char byte = 1;
      CHECK(pwrite(fd, &byte, 1, 0) == -1);
      CHECK(errno == EPERM);
      close(fd);
    }
    // A write to a shared object in one clone is not seen by the other.
    CHECK(ask(sbs[0].agent_fd.get(), "exec:import numpy, sys; numpy._sp_mark = 1; sys.modules['os'].sep2 = 1; "
                                     "result = numpy._sp_mark") == "1");
    CHECK(ask(sbs[1].agent_fd.get(), "exec:import numpy, os; result = hasattr(numpy, '_sp_mark') or "
                                     "hasattr(os, 'sep2')") == "False");
    // Copy-on-write stays 4 KiB-grained: a clone's writes after the fork (hundreds of pages,
    // spread over most of the template's huge pages) cost it far less than one 2 MiB copy each.
    for (auto& sb : sbs) CHECK(sb.cgroup.memory_current() < (6ull << 20));
    for (auto& sb : sbs) CHECK(s.ps->give_back(std::move(sb)));
  }
}

TEST_CASE("pool spawner: with two templates both fork clones, and the refill goes on when one is killed") {
  if (!as_root()) return;
  sp::PoolTemplateConfig cfg;
  cfg.pool = "unittest2t";
  cfg.preload = "";
  cfg.templates = 2;
  cfg.max_pending = 4;
  cfg.ready_target = 6;
  cfg.limits.memory_bytes = 128 << 20;
  Started s(cfg);
  auto sbs = s.take(6);
  REQUIRE(sbs.size() == 6);
  std::set<pid_t> parents;
  for (auto& sb : sbs) parents.insert(parent_of(sb.pid));
  // The second template may still be starting when the first has made the first six (its forks
  // take about a millisecond): take more, the refill goes on, until clones of both have come.
  for (int more = 0; more < 60 && parents.size() < 2; ++more) {
    auto got = s.take(1);
    if (got.empty()) break;
    parents.insert(parent_of(got[0].pid));
    sbs.push_back(std::move(got[0]));
  }
  CHECK(parents.size() == 2);
  for (auto& sb : sbs) CHECK(ask(sb.agent_fd.get(), "exec:result = 6 * 7") == "42");
  // One template dies (its clones with it): the other keeps serving, and the refill goes on.
  const pid_t dead = *parents.begin();
  REQUIRE(kill(dead, SIGKILL) == 0);
  // Its clones get their parent-death signal as it exits, before it turns zombie (or is reaped).
  for (int i = 0; i < 500 && process_state(dead) != 'Z' && process_state(dead) != 'X'; ++i) usleep(10000);
  const char state = process_state(dead);
  REQUIRE((state == 'Z' || state == 'X'));
  for (auto& sb : sbs) CHECK(s.ps->give_back(std::move(sb)));
  // Clones the killed template made just before may still wait in the ready ring, dead now
  // (PDEATHSIG): a consumer finds out on first use. Four live ones must come all the same.
  int live = 0;
  for (int takes = 0; takes < 16 && live < 4; ++takes) {
    auto got = s.take(1);
    if (got.empty()) break;
    if (ask(got[0].agent_fd.get(), "exec:result = 1 + 1") == "2") {
      CHECK(parent_of(got[0].pid) != dead);
      ++live;
    }
    CHECK(s.ps->give_back(std::move(got[0])));
  }
  CHECK(live == 4);
}

namespace {

// Directories of `pool`'s clones under our sandpool pids cgroup (the template's "tpl-" one aside).
int clone_cgroups_of(const std::string& pool) {
  int n = 0;
  std::string cmd = "find /sys/fs/cgroup/pids/sandpool /sys/fs/cgroup/sandpool -mindepth 2 -maxdepth 2 -type d -name '" +
                    pool + "-*' 2>/dev/null";
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return -1;
  char line[512];
  while (std::fgets(line, sizeof line, f)) ++n;
  pclose(f);
  return n;
}

}  // namespace

TEST_CASE("pool spawner: a stuck clone is killed and counted, a hung template restarted, and the refill goes on") {
  if (!as_root()) return;
  struct Case {
    const char* pool;
    uint32_t clone_ms, template_ms;
    uint64_t error;  // each failure's errno
  };
  // 1 ms: clones are not ready, and templates do not answer, that soon (the limits are checked
  // between the spawner's waits: a clone whose pid and ready record arrive together passes).
  for (Case c : {Case{"unitstuck", 1, 30000, ETIMEDOUT}, Case{"unithung", 30000, 1, EPIPE}}) {
    CAPTURE(c.pool);
    sp::PoolTemplateConfig cfg;
    cfg.pool = c.pool;
    cfg.preload = "";
    cfg.ready_target = 50;  // keeps it spawning (a clone that reports with its pid at once may pass)
    cfg.clone_timeout_ms = c.clone_ms;
    cfg.template_answer_timeout_ms = c.template_ms;
    Started s(cfg);
    // Without the limits the first two clones would hold both pending slots until they were
    // ready; with them they fail and more are tried (max_pending is 2: more than 2 failures
    // means the slots came free again).
    const sp::SpawnerStats& st = s.ps->stats();
    for (int i = 0; i < 400 && st.failed.load() < 4; ++i) usleep(50 * 1000);
    CHECK(st.failed.load() >= 4);
    CHECK(st.last_error.load() == c.error);
    s.ps.reset();  // stops the spawner: its clones and their cgroups go
    CHECK(clone_cgroups_of(c.pool) == 0);
  }
}
