// The writable layer over an id-mapped image rootfs, the child's mount plan, leftover reclaim (see layer.h).
#include "container/layer.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "sandbox/cgroup.h"
#include "util/log.h"

namespace sp::container {
namespace {

constexpr const char* kHosts = "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n";

// Mount points under `prefix` (prefix itself included), deepest first.
std::vector<std::string> mounts_under(const std::string& prefix) {
  std::vector<std::string> out;
  auto text = read_file("/proc/self/mountinfo");
  if (!text.ok()) return out;
  size_t pos = 0;
  const std::string& s = text.value();
  while (pos < s.size()) {
    size_t end = s.find('\n', pos);
    if (end == std::string::npos) end = s.size();
    std::string line = s.substr(pos, end - pos);
    pos = end + 1;
    // "id parent major:minor root mountpoint ..."
    size_t f = 0;
    for (int i = 0; i < 4 && f != std::string::npos; ++i) f = line.find(' ', f + 1);
    if (f == std::string::npos) continue;
    size_t e = line.find(' ', f + 1);
    std::string mp = line.substr(f + 1, e - f - 1);
    if (mp == prefix || mp.compare(0, prefix.size() + 1, prefix + "/") == 0) out.push_back(mp);
  }
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

}  // namespace

Result<UniqueFd> make_idmap_userns(uint32_t host_base, uint32_t range) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return errno_error("pipe2");
  UniqueFd r(p[0]), w(p[1]);
  int pidfd = -1;
  clone_args ca{};
  ca.flags = CLONE_NEWUSER | CLONE_PIDFD;
  ca.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  ca.exit_signal = SIGCHLD;
  // SAFETY: fork-like clone3 (no CLONE_VM); the child only reads the pipe and _exits.
  long pid = syscall(SYS_clone3, &ca, sizeof ca);
  if (pid < 0) return errno_error("clone3 idmap userns");
  if (pid == 0) {
    // Keep only our read end: a helper or sandbox child cloned at the same moment by another
    // spawner thread holds copies of our fds until it closes them, and we of its; holding the
    // write end of another helper's pipe would keep both waiting for EOF forever.
    if (p[0] > 0) close_range(0, static_cast<unsigned>(p[0]) - 1, 0);
    close_range(static_cast<unsigned>(p[0]) + 1, ~0U, 0);
    // The server's handlers (libuv's) are inherited: a signal must act on this helper as on any
    // process (SIGTERM ends it) instead of writing into a copy of the server's signal pipe.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
    char c;
    ssize_t n = read(p[0], &c, 1);
    (void)n;
    _exit(0);
  }
  UniqueFd child(pidfd);
  std::string dir = "/proc/" + std::to_string(pid);
  std::string map = "0 " + std::to_string(host_base) + " " + std::to_string(range) + "\n";
  Status st = write_file(dir + "/uid_map", map);
  if (st.ok()) st = write_file(dir + "/gid_map", map);
  UniqueFd ns;
  if (st.ok()) {
    ns.reset(open((dir + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) st = errno_error("open userns");
  }
  w.reset();  // the helper exits
  siginfo_t si;
  waitid(P_PIDFD, static_cast<id_t>(child.get()), &si, WEXITED);
  if (!st.ok()) return st.error();
  return ns;
}

Result<std::string> mount_writable_root(const std::string& dir, const std::string& image_rootfs, int idmap_userns_fd,
                                        uint32_t host_root_id, uint64_t data_bytes) {
  const std::string layer = dir + "/layer", lower = dir + "/lower", root = dir + "/root";
  // The child opens dir/root by path with its own (unprivileged on the host) ids: search only.
  if (mkdir(dir.c_str(), 0711) != 0 || chmod(dir.c_str(), 0711) != 0) return errno_error("mkdir layer dir");
  for (const std::string& d : {layer, lower, root})
    if (mkdir(d.c_str(), 0700) != 0) return errno_error("mkdir layer dir");
  struct stat rst;
  if (stat(image_rootfs.c_str(), &rst) != 0) return errno_error("stat image rootfs");
  // 2. the writable layer: a tmpfs bounded by the pool's data size.
  std::string opts = "size=" + std::to_string(data_bytes) + ",mode=0700";
  if (mount("tmpfs", layer.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) return errno_error("mount layer tmpfs");
  const std::string upper = layer + "/upper", work = layer + "/work";
  if (mkdir(upper.c_str(), rst.st_mode & 07777) != 0 || mkdir(work.c_str(), 0700) != 0) return errno_error("mkdir upper");
  // The overlay's root directory takes its owner from upper/: the container's root.
  if (chown(upper.c_str(), host_root_id, host_root_id) != 0) return errno_error("chown upper");
  if (chmod(upper.c_str(), rst.st_mode & 07777) != 0) return errno_error("chmod upper");
  // 3. the image, id-mapped (host 0 → the container's root) and read-only.
  // SAFETY: raw new-mount-API syscalls on fds we own; attr lives on our stack.
  UniqueFd tree(static_cast<int>(
      syscall(SYS_open_tree, AT_FDCWD, image_rootfs.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)));
  if (!tree) return errno_error("open_tree image");
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  attr.userns_fd = static_cast<uint64_t>(idmap_userns_fd);
  if (syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) != 0)
    return errno_error("idmap image mount");
  if (syscall(SYS_move_mount, tree.get(), "", AT_FDCWD, lower.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
    return errno_error("attach image mount");
  // 4. the overlay; its layers are private clones, so the originals can go at once.
  std::string ovl = "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work;
  int rc = mount("overlay", root.c_str(), "overlay", MS_NOSUID | MS_NODEV, ovl.c_str());
  int err = errno;
  umount2(lower.c_str(), MNT_DETACH);
  umount2(layer.c_str(), MNT_DETACH);
  if (rc != 0) return Error{err, "mount overlay"};
  return root;
}

void remove_layer_dir(const std::string& dir) {
  for (const std::string& mp : mounts_under(dir)) umount2(mp.c_str(), MNT_DETACH);
  if (!mounts_under(dir).empty()) {
    LOG_WARN("container layer %s still has mounts; left in place", dir.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);  // does not follow symlinks
}

Result<MountPlan> build_container_plan(const Launch& launch) {
  MountPlan p;
  p.staging = "/tmp";
  p.workdir = launch.workdir;
  const std::string s = p.staging;
  auto op = [&](MountOpKind k, std::string target, std::string arg = {}, std::string data = {}, unsigned long flags = 0,
                bool rec = false) { p.ops.push_back(MountOp{k, std::move(target), std::move(arg), std::move(data), flags, rec}); };
  auto source = [&](const std::string& host) {
    std::string fd = "/proc/self/fd/" + std::to_string(kSourceFdBase + p.sources.size());
    p.sources.push_back(host);
    return fd;
  };
  // 1. the root: the overlay, writable, nosuid/nodev (source 0, set per sandbox).
  op(MountOpKind::kBind, s, source(""), {}, MS_BIND | MS_REC, true);
  op(MountOpKind::kSetattr, s, {}, {}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, true);
  // 2. /dev: a small tmpfs with bound device nodes, and a private /dev/shm.
  op(MountOpKind::kMkdir, s + "/dev");
  op(MountOpKind::kMount, s + "/dev", "tmpfs", "size=64k,nr_inodes=64,mode=0755", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  for (const char* dev : {"null", "zero", "full", "random", "urandom"}) {
    std::string t = s + "/dev/" + dev;
    op(MountOpKind::kTouch, t);
    op(MountOpKind::kBind, t, source(std::string("/dev/") + dev), {}, MS_BIND);
    op(MountOpKind::kSetattr, t, {}, {}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
  }
  op(MountOpKind::kSymlink, s + "/dev/fd", "/proc/self/fd");
  op(MountOpKind::kSymlink, s + "/dev/stdin", "/proc/self/fd/0");
  op(MountOpKind::kSymlink, s + "/dev/stdout", "/proc/self/fd/1");
  op(MountOpKind::kSymlink, s + "/dev/stderr", "/proc/self/fd/2");
  op(MountOpKind::kMkdir, s + "/dev/shm");
  op(MountOpKind::kMount, s + "/dev/shm", "tmpfs", "size=64m,mode=1777", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  // 3. a fresh /proc of the sandbox's pid namespace, its knobs read-only.
  op(MountOpKind::kMkdir, s + "/proc");
  op(MountOpKind::kMount, s + "/proc", "proc", "", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  op(MountOpKind::kBind, s + "/proc/sys", s + "/proc/sys", {}, MS_BIND | MS_REC, true);
  op(MountOpKind::kSetattr, s + "/proc/sys", {}, {}, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, true);
  // 4. name resolution of localhost (written into the writable layer).
  if (!launch.has_etc) op(MountOpKind::kMkdir, s + "/etc");
  if (!launch.has_etc_hosts) op(MountOpKind::kWriteFile, s + "/etc/hosts", kHosts);
  // 5. the working directory (Docker creates it when the image lacks it).
  for (size_t pos = 1; pos <= launch.workdir.size(); ++pos) {
    if (pos == launch.workdir.size() || launch.workdir[pos] == '/') op(MountOpKind::kMkdir, s + launch.workdir.substr(0, pos));
  }
  if (p.sources.size() > static_cast<size_t>(kMaxSources)) return Error{kETooLarge, "too many mount sources"};
  return p;
}

void set_root_source(MountPlan& plan, const std::string& root) { plan.sources[0] = root; }

int reclaim_run_dirs(const std::string& run_root) {
  int reclaimed = 0;
  DIR* d = opendir(run_root.c_str());
  if (!d) return 0;
  std::vector<std::string> dead;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() < 2 || n[0] != 'o') continue;
    pid_t pid = static_cast<pid_t>(std::atoi(n.c_str() + 1));
    if (pid > 0 && owner_tag(pid) == n) continue;  // a live server's (maybe ours)
    dead.push_back(run_root + "/" + n);
  }
  closedir(d);
  for (const std::string& dir : dead) {
    remove_layer_dir(dir);
    ++reclaimed;
  }
  return reclaimed;
}

}  // namespace sp::container
