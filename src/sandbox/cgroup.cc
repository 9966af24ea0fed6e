// cgroup v1/v2 directories for sandboxes: create with limits, join, count OOM kills, kill, remove, reclaim.
#include "sandbox/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <cstdlib>
#include <cstring>

#include "util/log.h"

namespace sp {
namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

Status make_dir(const std::string& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return errno_error("mkdir cgroup");
  return {};
}

uint64_t keyed_value(const std::string& text, std::string_view key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ')
      return std::strtoull(std::string(line.substr(key.size() + 1)).c_str(), nullptr, 10);
    pos = eol + 1;
  }
  return 0;
}

// Between two tries at something a dying task holds up: a short sleep, then 1 ms ones, so that
// waiting does not take the CPU the exiting tasks (or the next fork) need.
void back_off(int attempt) { usleep(attempt < 20 ? 100 : 1000); }

// Kills every pid listed in dir/cgroup.procs until it reads empty (bounded, ≈ 0.2 s).
void kill_listed(const std::string& dir) {
  for (int round = 0; round < 200; ++round) {
    auto procs = read_file(dir + "/cgroup.procs");
    if (!procs.ok() || procs->empty()) return;
    char* p = procs->data();
    while (*p) {
      char* end;
      long pid = std::strtol(p, &end, 10);
      if (end == p) break;
      if (pid > 0) ::kill(static_cast<pid_t>(pid), SIGKILL);
      p = end;
      while (*p == '\n') ++p;
    }
    back_off(round);
  }
}

// rmdir with a bounded retry: a cgroup stays busy until its killed tasks have exited,
// which can take a few ms for a large process; give up after ~0.5 s (reclaim_stale at the
// next start removes what is left).
Status remove_dir(const std::string& dir) {
  for (int i = 0; i < 500; ++i) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
    if (errno != EBUSY) break;
    back_off(i);
  }
  return errno_error("rmdir cgroup");
}

}  // namespace

Status write_file(const std::string& path, std::string_view text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno_error("open for write");
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) return errno_error("write");
  return {};
}

Result<std::string> read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error("open for read");
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return errno_error("read");
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string owner_tag(pid_t pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return "";
  // Field 22 (starttime) counted after the ')' that ends the command name.
  size_t rp = stat->rfind(')');
  if (rp == std::string::npos) return "";
  const char* p = stat->c_str() + rp + 2;
  for (int field = 3; field < 22 && *p; ++field) {
    p = std::strchr(p, ' ');
    if (!p) return "";
    ++p;
  }
  // Appended piecewise: GCC 12 misreports `"o" + std::string` under -O3 (-Wrestrict).
  std::string tag = "o";
  tag += std::to_string(pid);
  tag += '_';
  tag.append(p, std::strcspn(p, " "));
  return tag;
}

Result<bool> cgroup_set_favor_dynmods(bool on, const std::string& root) {
  std::string target = exists(root + "/cgroup.controllers") ? root : root + "/unified";
  SP_TRY_ASSIGN(std::string info, read_file("/proc/self/mountinfo"));
  // mountinfo: "... <mount point> ... - cgroup2 <source> <super options>"
  size_t pos = 0;
  while (pos < info.size()) {
    size_t eol = info.find('\n', pos);
    if (eol == std::string::npos) eol = info.size();
    std::string line = info.substr(pos, eol - pos);
    pos = eol + 1;
    size_t dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos || line.find(" " + target + " ") == std::string::npos) continue;
    std::string super = line.substr(line.rfind(' ') + 1);
    std::string kept;
    bool was_on = false;
    size_t a = 0;
    while (a <= super.size()) {
      size_t b = super.find(',', a);
      if (b == std::string::npos) b = super.size();
      std::string opt = super.substr(a, b - a);
      if (opt == "favordynmods") was_on = true;
      else if (opt != "rw" && opt != "ro" && !opt.empty()) kept += (kept.empty() ? "" : ",") + opt;
      a = b + 1;
    }
    if (on) kept += (kept.empty() ? "" : ",") + std::string("favordynmods");
    // SAFETY: remount of an existing cgroup2 mount with its own options, plus or minus one.
    if (::mount("cgroup2", target.c_str(), "cgroup2", MS_REMOUNT, kept.c_str()) != 0)
      return errno_error("remount cgroup2 (favordynmods)");
    return was_on;
  }
  return Error{ENOENT, "no cgroup2 mount"};
}

// ---- Cgroup ----

Cgroup& Cgroup::operator=(Cgroup&& o) noexcept {
  if (this != &o) {
    if (valid()) {
      (void)kill();
      (void)remove();
    }
    version_ = o.version_;
    name_ = std::move(o.name_);
    dirs_ = std::move(o.dirs_);
    memory_dir_ = std::move(o.memory_dir_);
    pids_dir_ = std::move(o.pids_dir_);
    unified_dir_ = std::move(o.unified_dir_);
    cpu_dir_ = std::move(o.cpu_dir_);
    o.dirs_.clear();
  }
  return *this;
}

Cgroup::~Cgroup() {
  if (!valid()) return;
  (void)kill();
  if (auto st = remove(); !st.ok()) LOG_WARN("cgroup %s: %s", name_.c_str(), st.error().message().c_str());
}

Status Cgroup::add(pid_t pid) {
  std::string text = std::to_string(pid);
  for (const auto& d : dirs_) SP_TRY(write_file(d + "/cgroup.procs", text));
  return {};
}

Result<std::vector<UniqueFd>> Cgroup::open_procs_fds() const {
  std::vector<UniqueFd> fds;
  for (const auto& d : dirs_) {
    UniqueFd fd(::open((d + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return errno_error("open cgroup.procs");
    fds.push_back(std::move(fd));
  }
  return fds;
}

uint64_t Cgroup::oom_kills() const {
  if (version_ == CgroupVersion::kV2) {
    auto t = read_file(memory_dir_ + "/memory.events");
    return t.ok() ? keyed_value(*t, "oom_kill") : 0;
  }
  auto t = read_file(memory_dir_ + "/memory.oom_control");
  return t.ok() ? keyed_value(*t, "oom_kill") : 0;
}

uint64_t Cgroup::memory_current() const {
  const char* file = version_ == CgroupVersion::kV2 ? "/memory.current" : "/memory.usage_in_bytes";
  auto t = read_file(memory_dir_ + file);
  return t.ok() ? std::strtoull(t->c_str(), nullptr, 10) : 0;
}

Status Cgroup::kill() {
  if (!unified_dir_.empty() && write_file(unified_dir_ + "/cgroup.kill", "1").ok()) return {};
  kill_listed(pids_dir_);
  return {};
}

Status Cgroup::set_cpu_weight(uint32_t weight) {
  if (cpu_dir_.empty()) return Error{ENOENT, "no cpu controller"};
  weight = std::clamp<uint32_t>(weight, 1, 10000);
  if (version_ == CgroupVersion::kV2) return write_file(cpu_dir_ + "/cpu.weight", std::to_string(weight));
  return write_file(cpu_dir_ + "/cpu.shares", std::to_string(std::max<uint32_t>(2, weight * 1024 / 100)));
}

Status Cgroup::set_memory_limit(uint64_t bytes) {
  if (memory_dir_.empty()) return Error{ENOENT, "no memory controller"};
  std::string v = std::to_string(bytes);
  if (version_ == CgroupVersion::kV2) return write_file(memory_dir_ + "/memory.max", v);
  // memsw may not go below the limit: raise it first, lower it last (absent without swap accounting).
  (void)write_file(memory_dir_ + "/memory.memsw.limit_in_bytes", v);
  SP_TRY(write_file(memory_dir_ + "/memory.limit_in_bytes", v));
  (void)write_file(memory_dir_ + "/memory.memsw.limit_in_bytes", v);
  return {};
}

Status Cgroup::remove() {
  Status first;
  for (const auto& d : dirs_) {
    Status st = remove_dir(d);
    if (!st.ok() && first.ok()) first = st;
  }
  if (first.ok()) dirs_.clear();
  return first;
}

Status Cgroup::remove_now() {
  Status first;
  std::vector<std::string> left;
  for (const auto& d : dirs_) {
    if (::rmdir(d.c_str()) == 0 || errno == ENOENT) continue;
    if (first.ok()) first = errno_error("rmdir cgroup");
    left.push_back(d);
  }
  dirs_ = std::move(left);
  return first;
}

// ---- BusyCgroups ----

void BusyCgroups::add(Cgroup&& cg) {
  std::lock_guard<std::mutex> g(mu_);
  list_.push_back(std::move(cg));
}

size_t BusyCgroups::retry() {
  std::lock_guard<std::mutex> g(mu_);
  for (size_t i = list_.size(); i-- > 0;) {
    (void)list_[i].kill();
    if (list_[i].remove_now().ok()) list_.erase(list_.begin() + static_cast<long>(i));
  }
  return list_.size();
}

void BusyCgroups::retry_for(int max_ms) {
  for (int waited = 0; retry() > 0 && waited < max_ms; waited += 50) usleep(50 * 1000);
}

size_t BusyCgroups::size() const {
  std::lock_guard<std::mutex> g(mu_);
  return list_.size();
}

// ---- CgroupManager ----

namespace {
// Open managers of this process: the owner directories are made by the first and removed by the
// last (remove_owner_dirs), under the same lock so that a removal never races a creation.
std::mutex g_owner_mu;
int g_owner_users = 0;
}  // namespace

Result<CgroupManager> CgroupManager::open(std::string root, std::string prefix) {
  CgroupManager m;
  m.prefix_ = std::move(prefix);
  m.owner_ = owner_tag(getpid());
  auto controllers = read_file(root + "/cgroup.controllers");
  if (controllers.ok() && controllers->find("memory") != std::string::npos &&
      controllers->find("pids") != std::string::npos) {
    m.version_ = CgroupVersion::kV2;
    m.memory_ = m.pids_ = m.unified_ = root;
    if (controllers->find("cpu") != std::string::npos) m.cpu_ = root;
    // Controllers must be enabled for the children of every level we create.
    (void)write_file(root + "/cgroup.subtree_control", "+memory +pids +cpu");
  } else if (exists(root + "/memory/memory.limit_in_bytes") && exists(root + "/pids/cgroup.procs")) {
    m.version_ = CgroupVersion::kV1;
    m.memory_ = root + "/memory";
    m.pids_ = root + "/pids";
    if (exists(root + "/cpu/cpu.cfs_quota_us")) m.cpu_ = root + "/cpu";
    if (exists(root + "/unified/cgroup.procs")) m.unified_ = root + "/unified";
  } else {
    return Error{ENOENT, "no usable memory and pids cgroup controllers"};
  }
  std::lock_guard<std::mutex> owner_lock(g_owner_mu);
  std::vector<std::string> roots = {m.memory_};
  if (m.version_ == CgroupVersion::kV1) {
    roots.push_back(m.pids_);
    if (!m.cpu_.empty()) roots.push_back(m.cpu_);
    if (!m.unified_.empty()) roots.push_back(m.unified_);
  }
  for (const auto& r : roots) {
    SP_TRY(make_dir(r + "/" + m.prefix_));
    if (m.version_ == CgroupVersion::kV2) (void)write_file(r + "/" + m.prefix_ + "/cgroup.subtree_control", "+memory +pids +cpu");
    SP_TRY(make_dir(r + "/" + m.prefix_ + "/" + m.owner_));
    if (m.version_ == CgroupVersion::kV2)
      (void)write_file(r + "/" + m.prefix_ + "/" + m.owner_ + "/cgroup.subtree_control", "+memory +pids +cpu");
  }
  ++g_owner_users;
  m.owner_ref_.held = true;
  return m;
}

std::string CgroupManager::describe() const {
  std::string s = version_ == CgroupVersion::kV2 ? "cgroup v2 at " + memory_ : "cgroup v1 (" + memory_ + ", " + pids_;
  if (version_ == CgroupVersion::kV1) {
    if (!cpu_.empty()) s += ", " + cpu_;
    s += ")";
    if (!unified_.empty()) s += " + cgroup2 " + unified_ + " for cgroup.kill";
  }
  return s;
}

Result<Cgroup> CgroupManager::create(std::string_view name, const CgroupLimits& limits, bool with_kill_dir) {
  Cgroup cg;
  cg.version_ = version_;
  cg.name_ = std::string(name);
  auto path = [&](const std::string& root) { return root + "/" + prefix_ + "/" + owner_ + "/" + cg.name_; };
  const uint64_t mem = limits.memory_bytes + limits.headroom_bytes;
  if (version_ == CgroupVersion::kV2) {
    std::string d = path(memory_);
    SP_TRY(make_dir(d));
    cg.dirs_ = {d};
    cg.memory_dir_ = cg.pids_dir_ = cg.unified_dir_ = d;
    if (!cpu_.empty()) cg.cpu_dir_ = d;
    if (limits.memory_bytes) {
      SP_TRY(write_file(d + "/memory.max", std::to_string(mem)));
      (void)write_file(d + "/memory.swap.max", "0");
    }
    SP_TRY(write_file(d + "/pids.max", std::to_string(limits.pids_max)));
    if (limits.cpu_millis && !cpu_.empty())
      SP_TRY(write_file(d + "/cpu.max", std::to_string(limits.cpu_millis * 100) + " 100000"));
    return cg;
  }
  cg.memory_dir_ = path(memory_);
  cg.pids_dir_ = path(pids_);
  SP_TRY(make_dir(cg.memory_dir_));
  cg.dirs_.push_back(cg.memory_dir_);
  SP_TRY(make_dir(cg.pids_dir_));
  cg.dirs_.push_back(cg.pids_dir_);
  if (limits.memory_bytes) {
    SP_TRY(write_file(cg.memory_dir_ + "/memory.limit_in_bytes", std::to_string(mem)));
    (void)write_file(cg.memory_dir_ + "/memory.memsw.limit_in_bytes", std::to_string(mem));  // absent without swap accounting
  }
  SP_TRY(write_file(cg.pids_dir_ + "/pids.max", std::to_string(limits.pids_max)));
  if (!cpu_.empty()) {
    std::string d = path(cpu_);
    SP_TRY(make_dir(d));
    cg.dirs_.push_back(d);
    cg.cpu_dir_ = d;
    if (limits.cpu_millis) SP_TRY(write_file(d + "/cpu.cfs_quota_us", std::to_string(limits.cpu_millis * 100)));
  }
  if (!unified_.empty() && with_kill_dir) {
    std::string d = path(unified_);
    if (make_dir(d).ok()) {
      cg.dirs_.push_back(d);
      cg.unified_dir_ = d;
    }
  }
  return cg;
}

int CgroupManager::reclaim_stale() {
  int reclaimed = 0;
  std::vector<std::string> roots = {memory_};
  if (version_ == CgroupVersion::kV1) {
    roots.push_back(pids_);
    if (!cpu_.empty()) roots.push_back(cpu_);
    if (!unified_.empty()) roots.push_back(unified_);
  }
  // Kill through the pids (or v2) hierarchy first, then remove everywhere.
  for (const auto& r : roots) {
    std::string base = r + "/" + prefix_;
    DIR* d = ::opendir(base.c_str());
    if (!d) continue;
    while (dirent* e = ::readdir(d)) {
      if (e->d_type != DT_DIR || e->d_name[0] != 'o') continue;
      std::string owner = e->d_name;
      long pid = std::strtol(owner.c_str() + 1, nullptr, 10);
      if (pid <= 0 || owner_tag(static_cast<pid_t>(pid)) == owner) continue;  // alive: not ours to touch
      std::string odir = base + "/" + owner;
      DIR* od = ::opendir(odir.c_str());
      if (od) {
        while (dirent* s = ::readdir(od)) {
          if (s->d_type != DT_DIR || s->d_name[0] == '.') continue;
          std::string sdir = odir + "/" + s->d_name;
          if (!write_file(sdir + "/cgroup.kill", "1").ok()) kill_listed(sdir);
          if (remove_dir(sdir).ok() && r == memory_) ++reclaimed;
        }
        ::closedir(od);
      }
      (void)remove_dir(odir);
    }
    ::closedir(d);
  }
  return reclaimed;
}

CgroupManager& CgroupManager::operator=(CgroupManager&& o) noexcept {
  if (this == &o) return *this;
  remove_owner_dirs();
  version_ = o.version_;
  prefix_ = std::move(o.prefix_);
  owner_ = std::move(o.owner_);
  memory_ = std::move(o.memory_);
  pids_ = std::move(o.pids_);
  cpu_ = std::move(o.cpu_);
  unified_ = std::move(o.unified_);
  owner_ref_ = std::move(o.owner_ref_);
  return *this;
}

void CgroupManager::remove_owner_dirs() {
  if (!owner_ref_.held) return;  // never opened, moved from, or already done
  owner_ref_.held = false;
  std::lock_guard<std::mutex> owner_lock(g_owner_mu);
  if (--g_owner_users > 0) return;  // another pool still uses them
  for (const auto& r : {memory_, pids_, cpu_, unified_}) {
    if (r.empty()) continue;
    ::rmdir((r + "/" + prefix_ + "/" + owner_).c_str());
    if (version_ == CgroupVersion::kV2) break;
  }
}

}  // namespace sp
