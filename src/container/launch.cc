// Image config + pool overrides → the container's argv, env, working directory and ids (see launch.h).
#include "container/launch.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <optional>

#include "util/numbers.h"
#include "util/unique_fd.h"

namespace sp::container {
namespace {

// The importer refuses files owned by ids the sandboxes cannot map.
static_assert(image::UnpackLimits{}.max_owner_id + uint64_t{1} == kContainerIdRange);

std::optional<uint32_t> parse_id(std::string_view s) { return parse_whole<uint32_t>(s); }

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

struct PasswdEntry {
  uint32_t uid = 0, gid = 0;
  std::string home;
};

// Finds a line of /etc/passwd by name (or by uid when `name` is a number's text and `by_uid`).
std::optional<PasswdEntry> find_passwd(const std::string& passwd, std::string_view name, std::optional<uint32_t> uid) {
  for (std::string_view line : split(passwd, '\n')) {
    auto f = split(line, ':');
    if (f.size() < 7) continue;
    auto u = parse_id(f[2]), g = parse_id(f[3]);
    if (!u || !g) continue;
    if ((uid && *u == *uid) || (!uid && f[0] == name)) return PasswdEntry{*u, *g, std::string(f[5])};
  }
  return std::nullopt;
}

std::optional<uint32_t> find_group(const std::string& group, std::string_view name) {
  for (std::string_view line : split(group, '\n')) {
    auto f = split(line, ':');
    if (f.size() >= 3 && f[0] == name) return parse_id(f[2]);
  }
  return std::nullopt;
}

// Each component of `path` (absolute, inside the rootfs) must be a directory or absent, never a
// symlink or a file: the child mounts and mkdirs on them before pivot_root, where a symlink would
// point at the host's tree. Walks with O_NOFOLLOW from the rootfs fd.
Status check_dir_path(int root_fd, const std::string& path, bool* exists) {
  UniqueFd cur(dup(root_fd));
  if (!cur) return errno_error("dup");
  *exists = true;
  for (std::string_view comp : split(path, '/')) {
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") return Error{kEInvalid, "image path with '..'"};
    struct stat st;
    std::string c(comp);
    if (fstatat(cur.get(), c.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) return errno_error("stat image path");
      *exists = false;
      return {};
    }
    if (!S_ISDIR(st.st_mode)) return Error{kEInvalid, "image /dev, /proc, /etc or WorkingDir is not a directory"};
    UniqueFd next(openat(cur.get(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) return errno_error("open image path");
    cur = std::move(next);
  }
  return {};
}

void set_env(std::vector<std::string>& env, const std::string& name, const std::string& value) {
  for (std::string& e : env) {
    if (e.compare(0, name.size() + 1, name + "=") == 0) {
      e = name + "=" + value;
      return;
    }
  }
  env.push_back(name + "=" + value);
}

bool has_env(const std::vector<std::string>& env, const std::string& name) {
  for (const std::string& e : env)
    if (e.compare(0, name.size() + 1, name + "=") == 0) return true;
  return false;
}

}  // namespace

Result<std::string> read_in_root(const std::string& rootfs, const std::string& path, size_t max_bytes) {
  UniqueFd root(open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return errno_error("open rootfs");
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  std::string rel = path;
  while (!rel.empty() && rel[0] == '/') rel.erase(0, 1);
  // SAFETY: openat2 with a zeroed open_how of the size we pass; the path stays inside `root`.
  UniqueFd fd(static_cast<int>(syscall(SYS_openat2, root.get(), rel.c_str(), &how, sizeof how)));
  if (!fd) return errno_error("open file in image");
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return errno_error("stat file in image");
  if (!S_ISREG(st.st_mode)) return Error{kEInvalid, "image file is not a regular file"};
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read file in image");
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) return Error{kETooLarge, "image file too large"};
  }
  return out;
}

Result<Launch> resolve_launch(const image::ImageInfo& image, const pool::ContainerSettings& settings) {
  Launch l;
  // 1. argv: Docker/Kubernetes: command replaces Entrypoint (and drops Cmd), args replaces Cmd.
  std::vector<std::string> entry = settings.command ? *settings.command : image.entrypoint;
  std::vector<std::string> cmd = settings.args ? *settings.args : (settings.command ? std::vector<std::string>{} : image.cmd);
  l.argv = entry;
  l.argv.insert(l.argv.end(), cmd.begin(), cmd.end());
  if (l.argv.empty() || l.argv[0].empty()) return Error{kEInvalid, "image has no Entrypoint or Cmd and the pool sets no command"};

  // 2. the rootfs paths the spawn mounts on.
  UniqueFd root(open(image.rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return errno_error("open image rootfs");
  bool exists = false;
  for (const char* p : {"/dev", "/proc"}) SP_TRY(check_dir_path(root.get(), p, &exists));
  SP_TRY(check_dir_path(root.get(), "/etc", &l.has_etc));
  if (l.has_etc) {
    struct stat st;
    l.has_etc_hosts = fstatat(root.get(), "etc/hosts", &st, AT_SYMLINK_NOFOLLOW) == 0;
  }
  l.workdir = image.working_dir.empty() ? "/" : image.working_dir;
  if (l.workdir[0] != '/') return Error{kEInvalid, "image WorkingDir is not absolute"};
  SP_TRY(check_dir_path(root.get(), l.workdir, &exists));

  // 3. user: "uid[:gid]" or "name[:group]", resolved in the image's own files.
  std::string home = "/";
  if (!image.user.empty()) {
    auto parts = split(image.user, ':');
    if (parts.size() > 2) return Error{kEInvalid, "image User is not user[:group]"};
    std::string passwd, group;
    if (auto r = read_in_root(image.rootfs, "/etc/passwd"); r.ok()) passwd = std::move(r).value();
    std::optional<uint32_t> uid = parse_id(parts[0]);
    std::optional<PasswdEntry> pw = find_passwd(passwd, parts[0], uid);
    if (!uid) {
      if (!pw) return Error{kENotFound, "image User not found in the image's /etc/passwd"};
      uid = pw->uid;
    }
    l.uid = *uid;
    l.gid = pw ? pw->gid : 0;
    if (pw && !pw->home.empty()) home = pw->home;
    if (parts.size() == 2) {
      std::optional<uint32_t> gid = parse_id(parts[1]);
      if (!gid) {
        if (auto r = read_in_root(image.rootfs, "/etc/group"); r.ok()) group = std::move(r).value();
        gid = find_group(group, parts[1]);
        if (!gid) return Error{kENotFound, "image User's group not found in the image's /etc/group"};
      }
      l.gid = *gid;
    }
    if (l.uid >= kContainerIdRange || l.gid >= kContainerIdRange) return Error{kEInvalid, "image User id above 65535"};
  } else if (auto r = read_in_root(image.rootfs, "/etc/passwd"); r.ok()) {
    if (auto pw = find_passwd(r.value(), "root", 0u); pw && !pw->home.empty()) home = pw->home;
  }

  // 4. environment: image, then the pool's (overriding), then defaults for what is still unset.
  l.env = image.env;
  for (const auto& [name, value] : settings.env) set_env(l.env, name, value);
  if (!has_env(l.env, "PATH")) l.env.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  if (!has_env(l.env, "HOME")) l.env.push_back("HOME=" + home);
  if (!has_env(l.env, "HOSTNAME")) l.env.push_back("HOSTNAME=sandbox");

  // 5. the port the session layer and the probes connect to.
  l.port = settings.target_port;
  if (l.port == 0) {
    for (const std::string& p : image.exposed_ports) {
      auto slash = p.find('/');
      std::string_view proto = slash == std::string::npos ? "tcp" : std::string_view(p).substr(slash + 1);
      auto port = parse_id(std::string_view(p).substr(0, slash));
      if (proto == "tcp" && port && *port > 0 && *port < 65536) {
        l.port = static_cast<uint16_t>(*port);
        break;
      }
    }
  }
  if (l.port == 0) return Error{kEInvalid, "no targetPort and the image exposes no TCP port"};
  return l;
}

}  // namespace sp::container
