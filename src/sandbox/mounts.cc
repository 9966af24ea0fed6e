// Builds the mount plan of a sandbox root (parent) and replays it (child); see mounts.h.
#include "sandbox/mounts.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace sp {
namespace {

constexpr const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "sandbox:x:1000:1000:sandbox:/mnt/data:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
constexpr const char* kGroup = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n";
constexpr const char* kHosts = "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n";

// Host /etc entries a runtime needs (those that exist are bound read-only).
// Each entry costs three mount operations per exec-path sandbox (~50 µs); template clones
// inherit them from the template's base layer for free.
constexpr const char* kEtcEntries[] = {
    "alternatives",  // Debian's libblas.so.3 and friends resolve through it (numpy)
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "matplotlibrc", "mime.types", "python3",
    "python3.11", "nsswitch.conf", "fonts", "ssl", "os-release", "debian_version", "protocols", "services",
};

struct Builder {
  MountPlan plan;
  std::string s;  // staging prefix

  std::string at(const std::string& inside) { return s + inside; }
  void op(MountOpKind k, std::string target, std::string arg = {}, std::string data = {}, unsigned long flags = 0,
          bool rec = false) {
    plan.ops.push_back(MountOp{k, std::move(target), std::move(arg), std::move(data), flags, rec});
  }
  // mkdir -p of every component of `inside` (the root itself exists).
  void mkdirs(const std::string& inside) {
    for (size_t pos = 1; pos <= inside.size(); ++pos) {
      if (pos == inside.size() || inside[pos] == '/') op(MountOpKind::kMkdir, at(inside.substr(0, pos)));
    }
  }
  Status bind(const std::string& host, const std::string& inside, bool writable) {
    struct stat st;
    if (lstat(host.c_str(), &st) != 0) return errno_error("bind source");
    if (plan.sources.size() >= static_cast<size_t>(kMaxSources)) return Error{kETooLarge, "too many bind sources"};
    size_t slash = inside.rfind('/');
    if (slash > 0) mkdirs(inside.substr(0, slash));
    if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t n = readlink(host.c_str(), buf, sizeof buf - 1);
      if (n < 0) return errno_error("readlink");
      op(MountOpKind::kSymlink, at(inside), std::string(buf, static_cast<size_t>(n)));
      return {};
    }
    op(S_ISDIR(st.st_mode) ? MountOpKind::kMkdir : MountOpKind::kTouch, at(inside));
    std::string src = "/proc/self/fd/" + std::to_string(kSourceFdBase + plan.sources.size());
    plan.sources.push_back(host);
    op(MountOpKind::kBind, at(inside), src, {}, MS_BIND | MS_REC, true);
    unsigned long attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (writable ? 0 : MOUNT_ATTR_RDONLY);
    op(MountOpKind::kSetattr, at(inside), {}, {}, attrs, true);
    return {};
  }
  bool base = true;  // false for MountLayer::kScratch: the directories exist already
  void tmpfs(const std::string& inside, const std::string& options, unsigned long flags) {
    if (base) mkdirs(inside);
    op(MountOpKind::kMount, at(inside), "tmpfs", options, flags);
  }
};

bool exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

Status add_base(Builder& b, const MountConfig& cfg);  // root, runtime, /etc, /dev

}  // namespace

Result<MountPlan> build_mount_plan(const MountConfig& cfg) {
  Builder b;
  const unsigned long nosuid_nodev = MS_NOSUID | MS_NODEV;
  const bool base = cfg.layer != MountLayer::kScratch, scratch = cfg.layer != MountLayer::kBase;
  if (!base) {
    b.plan.staging = "";  // a clone's targets are absolute: it is already inside the root
    b.base = false;
  }
  if (cfg.layer == MountLayer::kBase) b.plan.workdir = "/";
  b.s = b.plan.staging;
  if (base) SP_TRY(add_base(b, cfg));
  // /dev/shm: shared memory must not be shared between sandboxes.
  if (scratch) b.tmpfs("/dev/shm", "size=" + std::to_string(cfg.shm_bytes) + ",mode=1777", nosuid_nodev | MS_NOEXEC);
  else b.mkdirs("/dev/shm");
  // 4. a fresh /proc for the new pid namespace, mounted before pivot_root (a user ns may only
  //    mount proc while a full proc is visible), with its writable knobs made read-only.
  if (base) b.mkdirs("/proc");
  if (scratch) {
    b.op(MountOpKind::kMount, b.at("/proc"), "proc", "", nosuid_nodev | MS_NOEXEC);
    for (const char* ro : {"/proc/sys"}) {
      b.op(MountOpKind::kBind, b.at(ro), b.at(ro), {}, MS_BIND | MS_REC, true);
      b.op(MountOpKind::kSetattr, b.at(ro), {}, {}, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, true);
    }
  }
  // 5. writable, size-limited scratch space.
  std::string owner = cfg.privileged ? ",uid=1000,gid=1000" : "";
  if (scratch) {
    b.tmpfs("/mnt/data", "size=" + std::to_string(cfg.data_bytes) + ",mode=0755" + owner, nosuid_nodev);
    b.tmpfs("/tmp", "size=" + std::to_string(cfg.tmp_bytes) + ",mode=1777", nosuid_nodev);
  } else {
    b.mkdirs("/mnt/data");
    b.tmpfs("/tmp", "size=16m,mode=1777", nosuid_nodev);  // the template's own (matplotlib's cache)
  }
  if (base) {
    // 6. user binds (tests put their probes here; the template its agent).
    for (const BindSpec& bs : cfg.extra_binds) SP_TRY(b.bind(bs.source, bs.target, bs.writable));
    // 7. nothing else may be created in the root.
    b.op(MountOpKind::kSetattr, b.s, {}, {}, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
  }
  return std::move(b.plan);
}

namespace {
Status add_base(Builder& b, const MountConfig& cfg) {
  const unsigned long nosuid_nodev = MS_NOSUID | MS_NODEV;
  // 1. the root itself, made read-only at the end.
  b.op(MountOpKind::kMount, b.s, "tmpfs", "size=2m,nr_inodes=4096,mode=0755", nosuid_nodev);
  // 2. the runtime.
  if (cfg.rootfs.empty()) {
    SP_TRY(b.bind("/usr", "/usr", false));
    for (const char* top : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
      std::string host = std::string("/") + top;
      if (exists(host)) SP_TRY(b.bind(host, host, false));
    }
    b.mkdirs("/etc");
    b.op(MountOpKind::kWriteFile, b.at("/etc/passwd"), kPasswd);
    b.op(MountOpKind::kWriteFile, b.at("/etc/group"), kGroup);
    b.op(MountOpKind::kWriteFile, b.at("/etc/hosts"), kHosts);
    b.op(MountOpKind::kWriteFile, b.at("/etc/hostname"), "sandbox\n");
    for (const char* e : kEtcEntries) {
      std::string host = std::string("/etc/") + e;
      if (exists(host)) SP_TRY(b.bind(host, host, false));
    }
  } else {
    DIR* d = opendir(cfg.rootfs.c_str());
    if (!d) return errno_error("open rootfs");
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n == "." || n == ".." || n == "proc" || n == "dev" || n == "sys" || n == "tmp" || n == "mnt") continue;
      Status st = b.bind(cfg.rootfs + "/" + n, "/" + n, false);
      if (!st.ok()) {
        closedir(d);
        return st;
      }
    }
    closedir(d);
  }
  // 3. /dev: a small tmpfs with bound device nodes (the tmpfs itself is nodev).
  b.tmpfs("/dev", "size=64k,nr_inodes=64,mode=0755", nosuid_nodev | MS_NOEXEC);
  for (const char* dev : {"null", "zero", "full", "random", "urandom"}) {
    std::string host = std::string("/dev/") + dev;
    b.op(MountOpKind::kTouch, b.at(host));
    b.op(MountOpKind::kBind, b.at(host), "/proc/self/fd/" + std::to_string(kSourceFdBase + b.plan.sources.size()), {},
         MS_BIND);
    b.plan.sources.push_back(host);
    b.op(MountOpKind::kSetattr, b.at(host), {}, {}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
  }
  b.op(MountOpKind::kSymlink, b.at("/dev/fd"), "/proc/self/fd");
  b.op(MountOpKind::kSymlink, b.at("/dev/stdin"), "/proc/self/fd/0");
  b.op(MountOpKind::kSymlink, b.at("/dev/stdout"), "/proc/self/fd/1");
  b.op(MountOpKind::kSymlink, b.at("/dev/stderr"), "/proc/self/fd/2");
  return {};
}
}  // namespace

int open_mount_sources_in_child(const MountPlan& plan, uint32_t* failed) {
  for (size_t i = 0; i < plan.sources.size(); ++i) {
    *failed = static_cast<uint32_t>(i);
    int fd = open(plan.sources[i].c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno;
    int want = kSourceFdBase + static_cast<int>(i);
    if (fd != want) {
      // EBADF: `want` is at or above RLIMIT_NOFILE; EMFILE names that cause.
      if (dup3(fd, want, O_CLOEXEC) < 0) return errno == EBADF ? EMFILE : errno;
      close(fd);
    }
  }
  return 0;
}

int run_mount_plan_in_child(const MountPlan& plan, uint32_t* failed) {
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    const MountOp& o = plan.ops[i];
    *failed = static_cast<uint32_t>(i);
    const char* t = o.target.c_str();
    switch (o.kind) {
      case MountOpKind::kMkdir:
        if (mkdir(t, 0755) != 0 && errno != EEXIST) return errno;
        break;
      case MountOpKind::kSymlink:
        if (symlink(o.arg.c_str(), t) != 0) return errno;
        break;
      case MountOpKind::kTouch: {
        int fd = open(t, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 && errno != EEXIST) return errno;
        if (fd >= 0) close(fd);
        break;
      }
      case MountOpKind::kWriteFile: {
        int fd = open(t, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) return errno;
        ssize_t n = write(fd, o.arg.data(), o.arg.size());
        int err = n == static_cast<ssize_t>(o.arg.size()) ? 0 : (n < 0 ? errno : EIO);
        close(fd);
        if (err) return err;
        break;
      }
      case MountOpKind::kBind:
        if (mount(o.arg.c_str(), t, nullptr, o.flags, nullptr) != 0) return errno;
        break;
      case MountOpKind::kMount:
        if (mount(o.arg.c_str(), t, o.arg.c_str(), o.flags, o.data.empty() ? nullptr : o.data.c_str()) != 0)
          return errno;
        break;
      case MountOpKind::kSetattr: {
        mount_attr attr{};
        attr.attr_set = o.flags;
        // SAFETY: raw mount_setattr on a path we just mounted; attr lives on our stack.
        if (syscall(SYS_mount_setattr, AT_FDCWD, t, o.recursive ? AT_RECURSIVE : 0, &attr, sizeof attr) != 0)
          return errno;
        break;
      }
    }
  }
  return 0;
}

int pivot_in_child(const MountPlan& plan) {
  if (chdir(plan.staging.c_str()) != 0) return errno;
  // SAFETY: pivot_root(".", ".") stacks the old root on top of the new one; the
  // lazy unmount of "." then detaches it, leaving only the new root.
  if (syscall(SYS_pivot_root, ".", ".") != 0) return errno;
  if (umount2(".", MNT_DETACH) != 0) return errno;
  if (chdir(plan.workdir.c_str()) != 0) return errno;
  return 0;
}

}  // namespace sp
