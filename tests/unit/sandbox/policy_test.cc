// Unit tests for the parts of src/sandbox that need no privileges: the seccomp table, the mount plan, id maps.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>

#include "sandbox/cgroup.h"
#include "sandbox/mounts.h"
#include "sandbox/seccomp_policy.h"
#include "sandbox/userns.h"

TEST_CASE("seccomp: every policy entry has a reason and a unique name; it compiles") {
  size_t n = 0;
  const sp::SeccompEntry* p = sp::seccomp_policy(&n);
  REQUIRE(n > 100);
  std::set<std::string> names;
  for (size_t i = 0; i < n; ++i) {
    CHECK(std::strlen(p[i].reason) > 3);
    CHECK(names.insert(p[i].name).second);
  }
  for (const char* needed : {"restart_syscall", "futex", "rt_sigreturn", "exit_group", "execve", "clone"})
    CHECK(names.count(needed) == 1);
  for (const char* denied : {"mount", "ptrace", "bpf", "unshare", "setns", "keyctl", "io_uring_setup", "setuid"})
    CHECK(names.count(denied) == 0);
  auto prog = sp::compile_seccomp_policy();
  REQUIRE(prog.ok());
  CHECK(prog->insns.size() > 50);
}

TEST_CASE("mounts: the default plan has the runtime read-only, data and tmp sized, root read-only last") {
  sp::MountConfig cfg;
  cfg.data_bytes = 1 << 20;
  cfg.tmp_bytes = 2 << 20;
  auto plan = sp::build_mount_plan(cfg);
  REQUIRE(plan.ok());
  bool data = false, tmp = false, proc = false, usr_ro = false;
  for (const auto& op : plan->ops) {
    if (op.kind == sp::MountOpKind::kMount && op.target == "/tmp/mnt/data")
      data = op.data.find("size=1048576") != std::string::npos && op.data.find("uid=1000") != std::string::npos;
    if (op.kind == sp::MountOpKind::kMount && op.target == "/tmp/tmp") tmp = op.data.find("size=2097152") != std::string::npos;
    if (op.kind == sp::MountOpKind::kMount && op.arg == "proc") proc = true;
    if (op.kind == sp::MountOpKind::kSetattr && op.target == "/tmp/usr") usr_ro = (op.flags & MOUNT_ATTR_RDONLY) != 0;
    CHECK(op.target.rfind("/tmp", 0) == 0);
    CHECK(op.target.rfind("/tmp/sys", 0) != 0);  // no /sys at all
  }
  CHECK(data);
  CHECK(tmp);
  CHECK(proc);
  CHECK(usr_ro);
  const auto& last = plan->ops.back();
  CHECK(last.kind == sp::MountOpKind::kSetattr);
  CHECK(last.target == "/tmp");
  CHECK((last.flags & MOUNT_ATTR_RDONLY) != 0);
  CHECK(plan->sources.size() <= static_cast<size_t>(sp::kMaxSources));
}

TEST_CASE("mounts: a missing bind source is an error, not a crash") {
  sp::MountConfig cfg;
  cfg.extra_binds.push_back({"/nonexistent/sandpool-test", "/x", false});
  auto plan = sp::build_mount_plan(cfg);
  CHECK_FALSE(plan.ok());
}

TEST_CASE("userns: slots map to distinct unprivileged host id pairs") {
  auto a = sp::id_mapping_for_slot(1), b = sp::id_mapping_for_slot(2);
  if (a.privileged) {
    CHECK(a.host_root_uid >= sp::kHostIdBase);
    CHECK(a.host_user_uid == a.host_root_uid + 1);
    CHECK(b.host_root_uid == a.host_root_uid + 2);
  }
}

TEST_CASE("mounts: the template's base layer and a clone's scratch layer split the whole root") {
  sp::MountConfig cfg;
  cfg.layer = sp::MountLayer::kBase;
  auto base = sp::build_mount_plan(cfg);
  cfg.layer = sp::MountLayer::kScratch;
  auto scratch = sp::build_mount_plan(cfg);
  REQUIRE(base.ok());
  REQUIRE(scratch.ok());
  CHECK(base->workdir == "/");
  CHECK(scratch->sources.empty());  // a clone opens nothing on the host
  CHECK(scratch->ops.size() < 12);  // and does a handful of mounts
  for (const auto& op : scratch->ops) {
    CHECK(op.kind != sp::MountOpKind::kMkdir);  // its root is read-only: mount points come from the base
    CHECK(op.target.rfind("/tmp/", 0) != 0);    // absolute targets, no staging prefix
  }
  bool proc_in_base = false;
  for (const auto& op : base->ops)
    if (op.kind == sp::MountOpKind::kMount && op.arg == "proc") proc_in_base = true;
  CHECK_FALSE(proc_in_base);  // the template keeps no view of the host's processes
}

TEST_CASE("cgroups: the owner directories are removed by the last of the process's managers") {
  // A directory shaped like a v1 hierarchy (the files open() looks for), not the real one.
  char tmpl[] = "/tmp/sp-cgroup-test-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string root = tmpl;
  for (const char* d : {"/memory", "/pids"}) REQUIRE(mkdir((root + d).c_str(), 0755) == 0);
  for (const char* f : {"/memory/memory.limit_in_bytes", "/pids/cgroup.procs"}) {
    FILE* fp = fopen((root + f).c_str(), "w");
    REQUIRE(fp != nullptr);
    fclose(fp);
  }
  auto a = sp::CgroupManager::open(root, "sp-test");
  auto b = sp::CgroupManager::open(root, "sp-test");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  std::string owner = root + "/memory/sp-test/" + sp::owner_tag(getpid());
  struct stat st;
  CHECK(stat(owner.c_str(), &st) == 0);
  a->remove_owner_dirs();
  a->remove_owner_dirs();  // once per open(): a second call changes nothing
  CHECK(stat(owner.c_str(), &st) == 0);  // b still uses them
  {
    // Assigning over an open manager ends its use: c's reference must not outlive it.
    auto c = sp::CgroupManager::open(root, "sp-test");
    REQUIRE(c.ok());
    sp::CgroupManager moved = std::move(c).value();
    moved = sp::CgroupManager{};
    CHECK(stat(owner.c_str(), &st) == 0);  // b still uses them
  }
  b->remove_owner_dirs();
  CHECK(stat(owner.c_str(), &st) != 0);
  for (const char* d : {"/memory/sp-test", "/pids/sp-test"}) CHECK(rmdir((root + d).c_str()) == 0);  // empty now
  for (const char* f : {"/memory/memory.limit_in_bytes", "/pids/cgroup.procs"}) (void)unlink((root + f).c_str());
  (void)rmdir((root + "/memory").c_str());
  (void)rmdir((root + "/pids").c_str());
  (void)rmdir(root.c_str());
}

TEST_CASE("cgroups: a cgroup still busy is kept by BusyCgroups and removed once its tasks are gone") {
  if (geteuid() != 0) {
    MESSAGE("skipped: needs root (cgroups)");
    return;
  }
  auto m = sp::CgroupManager::open();
  if (!m.ok()) {
    MESSAGE("skipped: no usable cgroups: " << m.error().message());
    return;
  }
  sp::CgroupLimits limits;
  limits.memory_bytes = 64 << 20;
  auto cg = m->create("unitbusy", limits);
  REQUIRE_MESSAGE(cg.ok(), cg.error().message());
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    alarm(60);  // gone even if a check below stops the test before it kills us
    pause();
    _exit(0);
  }
  REQUIRE(cg->add(child).ok());
  sp::Status st = cg->remove_now();
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == EBUSY);
  CHECK(cg->valid());  // the directories still there are kept
  sp::BusyCgroups busy;
  busy.add(std::move(cg.value()));
  CHECK(busy.size() == 1);
  (void)busy.retry();  // kills the task; its directory goes once the task has exited (now or later)
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));  // the retry's kill, not our alarm
  CHECK(busy.retry() == 0);
  CHECK(busy.size() == 0);
}
