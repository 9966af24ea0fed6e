// Image layers and image tarballs as src/image/unpack.cc extracts them (as root, when a pool is
// created from an image the user brings). Input: one byte choosing the archive kind (layer or
// bundle), then the archive (tar, gzip or zstd; libarchive detects which). Checks, besides "no crash":
//  - nothing appears beside the directory the archive is extracted into (no `..`, no path through
//    a symlink, no hardlink leads out);
//  - what was extracted holds no device node, FIFO or socket, no setuid or setgid bit, and no
//    relative symlink that climbs above the extraction root;
//  - the tree can be removed again.
//
// Extraction runs in a thread of its own (unshare(CLONE_FS | CLONE_NEWNS)) whose root is a tmpfs
// mounted nowhere: a bug that wrote through an absolute path would write there, not to this
// machine. The rest of the process, libFuzzer's corpus and crash files included, keeps the host's
// root. Without root (no mount namespace) the target says so once and checks nothing.
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <mutex>
#include <string>
#include <thread>

#include "fuzz_split.h"
#include "image/libarchive.h"
#include "image/unpack.h"

namespace {

// The unpacking thread and its hand-over: one input at a time, the caller waits for the answer.
struct Unpacker {
  std::mutex m;
  std::condition_variable cv;
  const uint8_t* data = nullptr;
  size_t size = 0;
  bool has_input = false, has_answer = false;
  const char* failed = nullptr;  // the check that failed (reported on the caller's thread)
  bool ready = false;            // the thread has its root
  std::string why_not;           // why it has none
};

// Never destroyed: the thread waits on its condition variable until the process ends (destroying
// a condition variable with a waiter blocks).
Unpacker& g_box = *new Unpacker;

int fsmount_tmpfs() {
  int fs = static_cast<int>(syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC));
  if (fs < 0) return -1;
  int m = -1;
  if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "size", "256m", 0) == 0 &&
      syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) == 0)
    m = static_cast<int>(syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV));
  close(fs);
  return m;
}

// Enters a root of its own: a private mount namespace and fs context for this thread only, then
// chroot into a detached tmpfs. Returns why not, or "".
std::string enter_own_root() {
  if (geteuid() != 0) return "needs root (a mount namespace)";
  // libarchive is loaded on first use (dlopen): from the host's root, before leaving it.
  if (auto st = sp::image::load_libarchive(); !st.ok()) return "libarchive: " + st.error().message();
  if (unshare(CLONE_FS | CLONE_NEWNS) != 0) return std::string("unshare: ") + strerror(errno);
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return std::string("mount: ") + strerror(errno);
  int m = fsmount_tmpfs();
  if (m < 0) return std::string("fsmount(tmpfs): ") + strerror(errno);
  if (fchdir(m) != 0 || chroot(".") != 0 || chdir("/") != 0) return std::string("chroot: ") + strerror(errno);
  close(m);
  return "";
}

// Whether the relative symlink target `target`, in a directory `depth` levels below the root,
// climbs above the root. Written apart from unpack.cc's symlink_stays_inside on purpose: the
// check must not share the code it checks.
bool climbs_out(const std::string& target, int depth) {
  if (!target.empty() && target[0] == '/') return false;  // resolved in the container's root
  size_t pos = 0;
  while (pos <= target.size()) {
    size_t end = target.find('/', pos);
    if (end == std::string::npos) end = target.size();
    std::string c = target.substr(pos, end - pos);
    if (c == "..") {
      if (--depth < 0) return true;
    } else if (!c.empty() && c != ".") {
      ++depth;
    }
    pos = end + 1;
  }
  return false;
}

// Walks the extracted tree; returns the first check it breaks, or nullptr.
const char* check_tree(int dirfd, int depth) {
  DIR* d = fdopendir(dirfd);
  if (!d) {
    close(dirfd);
    return nullptr;
  }
  const char* bad = nullptr;
  while (dirent* e = readdir(d)) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    struct stat st;
    if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
      bad = "no device node, FIFO or socket is extracted";
    } else if (!S_ISDIR(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID))) {
      bad = "no setuid or setgid bit survives";
    } else if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t n = readlinkat(dirfd, e->d_name, buf, sizeof buf);
      if (n >= 0 && climbs_out(std::string(buf, static_cast<size_t>(n)), depth))
        bad = "no relative symlink climbs above the root";
    } else if (S_ISDIR(st.st_mode)) {
      int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) bad = check_tree(sub, depth + 1);
    }
    if (bad) break;
  }
  closedir(d);
  return bad;
}

// One input, in the thread's own root: "/" holds only "t", the extraction root, afterwards.
const char* unpack_once(int archive, const uint8_t* data, size_t size) {
  if (ftruncate(archive, 0) != 0 || pwrite(archive, data + 1, size - 1, 0) != static_cast<ssize_t>(size - 1))
    return nullptr;  // the input did not fit in memory: not the unpacker's fault
  lseek(archive, 0, SEEK_SET);
  if (mkdir("/t", 0755) != 0) return "the previous extraction root was removed";
  int root = open("/t", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  sp::image::UnpackLimits limits;
  limits.max_total_bytes = 16 << 20;
  limits.max_entries = 2000;
  limits.max_file_bytes = 4 << 20;
  limits.max_trailing_bytes = 1 << 20;
  sp::image::UnpackCounters counters;
  sp::image::ArchiveDigests digests;
  const auto kind = data[0] & 1 ? sp::image::ArchiveKind::Bundle : sp::image::ArchiveKind::Layer;
  (void)sp::image::unpack_archive(archive, root, kind, limits, counters, &digests);
  const char* bad = nullptr;
  DIR* top = opendir("/");
  while (dirent* e = top ? readdir(top) : nullptr) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "t")) {
      bad = "nothing appears beside the extraction root";
      break;
    }
  }
  if (top) closedir(top);
  if (!bad) bad = check_tree(dup(root), 0);
  close(root);
  int slash = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!sp::image::remove_tree_at(slash, "t").ok() && !bad) bad = "the extracted tree can be removed";
  // Whatever escaped is cleared too, so that the next input starts from an empty root.
  if (bad) {
    DIR* d = fdopendir(dup(slash));
    while (dirent* e = d ? readdir(d) : nullptr)
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) (void)sp::image::remove_tree_at(slash, e->d_name);
    if (d) closedir(d);
  }
  close(slash);
  return bad;
}

void unpacker_main() {
  std::string why = enter_own_root();
  int archive = why.empty() ? memfd_create("fuzz-archive", MFD_CLOEXEC) : -1;
  if (why.empty() && archive < 0) why = std::string("memfd_create: ") + strerror(errno);
  {
    std::lock_guard<std::mutex> l(g_box.m);
    g_box.why_not = why;
    g_box.ready = true;
  }
  g_box.cv.notify_all();
  if (!why.empty()) return;
  for (;;) {
    std::unique_lock<std::mutex> l(g_box.m);
    g_box.cv.wait(l, [] { return g_box.has_input; });
    g_box.has_input = false;
    const uint8_t* data = g_box.data;
    size_t size = g_box.size;
    l.unlock();
    const char* failed = unpack_once(archive, data, size);
    l.lock();
    g_box.failed = failed;
    g_box.has_answer = true;
    l.unlock();
    g_box.cv.notify_all();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool started = [] {
    std::thread(unpacker_main).detach();  // lives as long as the process
    std::unique_lock<std::mutex> l(g_box.m);
    g_box.cv.wait(l, [] { return g_box.ready; });
    if (!g_box.why_not.empty()) fprintf(stderr, "fuzz-image_unpack: skipped, %s\n", g_box.why_not.c_str());
    return true;
  }();
  (void)started;
  if (!g_box.why_not.empty() || size < 1) return 0;
  std::unique_lock<std::mutex> l(g_box.m);
  g_box.data = data;
  g_box.size = size;
  g_box.has_input = true;
  g_box.has_answer = false;
  g_box.cv.notify_all();
  g_box.cv.wait(l, [] { return g_box.has_answer; });
  if (g_box.failed) sp::fuzz::fail(g_box.failed);
  return 0;
}
