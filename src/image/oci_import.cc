// OCI / docker-save image import: resolves index → manifest → config, verifies blobs, and
// has unpack.cc apply the layers; the on-disk safety rules live in unpack.cc.
#include "image/oci_import.h"

#include <dirent.h>
#include <fcntl.h>
#include <simdjson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string_view>

#include "util/sha256.h"

namespace sp::image {
namespace {

constexpr size_t kMaxJsonBytes = 4 << 20;
constexpr int kMaxIndexDepth = 4;
#if defined(__x86_64__)
constexpr std::string_view kHostArch = "amd64";
#elif defined(__aarch64__)
constexpr std::string_view kHostArch = "arm64";
#else
constexpr std::string_view kHostArch = "";
#endif

constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
constexpr std::string_view kLayerTypes[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
};

Error invalid(const char* where) { return Error{kEInvalid, where}; }

// A blob to read: its path below the layout root and the sha256 it must have.
struct BlobRef {
  std::string path;
  std::string hex;       // sha256 of the bytes as stored ("" for docker-save layers: none stated)
  int64_t size = -1;     // -1: not stated
  std::string diff_hex;  // layers: the config's rootfs.diff_ids entry (sha256 of the tar)
};

struct Plan {
  std::string config_hex;
  std::string config_json;
  std::vector<BlobRef> layers;
};

// "sha256:<64 lowercase hex>" → hex; anything else (other algorithms included) is rejected,
// which also keeps digests from naming paths.
Result<std::string> parse_digest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (!digest.starts_with(kPrefix) || digest.size() != kPrefix.size() + 64) {
    return invalid("image: digest is not sha256:<64 hex digits>");
  }
  std::string_view hex = digest.substr(kPrefix.size());
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return invalid("image: digest has non-hex digits");
  }
  return std::string(hex);
}

Result<std::string> read_all(int fd, size_t max_bytes) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("image: read file");
    }
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > max_bytes) return Error{kETooLarge, "image: JSON file is too large"};
    out.append(buf, static_cast<size_t>(n));
  }
}

// Reads a JSON blob once and checks what was read against its digest (and size, if stated).
Result<std::string> read_verified(int root_fd, const BlobRef& ref) {
  SP_TRY_ASSIGN(UniqueFd fd, open_beneath(root_fd, ref.path, O_RDONLY));
  SP_TRY_ASSIGN(std::string data, read_all(fd.get(), kMaxJsonBytes));
  if (ref.size >= 0 && data.size() != static_cast<uint64_t>(ref.size)) {
    return invalid("image: blob size does not match its descriptor");
  }
  if (sha256_hex(data) != ref.hex) return invalid("image: blob content does not match its sha256 digest");
  return data;
}

// The config's rootfs.diff_ids, which must pair one to one with the manifest's layers.
Status attach_diff_ids(const std::string& config_json, std::vector<BlobRef>& layers) {
  simdjson::dom::parser parser;
  simdjson::dom::element config;
  simdjson::dom::array diff_ids;
  if (parser.parse(config_json).get(config) != simdjson::SUCCESS ||
      config["rootfs"]["diff_ids"].get_array().get(diff_ids) != simdjson::SUCCESS) {
    return invalid("image: config has no rootfs.diff_ids");
  }
  if (diff_ids.size() != layers.size()) return invalid("image: layer count differs from the config's rootfs.diff_ids");
  size_t i = 0;
  for (simdjson::dom::element d : diff_ids) {
    std::string_view digest;
    if (d.get_string().get(digest) != simdjson::SUCCESS) return invalid("image: diff_id is not a string");
    SP_TRY_ASSIGN(layers[i++].diff_hex, parse_digest(digest));
  }
  return {};
}

Result<BlobRef> descriptor(simdjson::dom::element e) {
  std::string_view digest;
  if (e["digest"].get_string().get(digest) != simdjson::SUCCESS) return invalid("image: descriptor has no digest");
  SP_TRY_ASSIGN(std::string hex, parse_digest(digest));
  BlobRef ref{"blobs/sha256/" + hex, hex, -1, ""};
  int64_t size;
  if (e["size"].get_int64().get(size) == simdjson::SUCCESS) {
    if (size < 0) return invalid("image: descriptor has a negative size");
    ref.size = size;
  }
  return ref;
}

// Parses an OCI image manifest (or Docker v2 manifest) into a plan, reading the config.
Result<Plan> plan_from_manifest(int root_fd, const std::string& manifest_json) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(manifest_json).get(doc) != simdjson::SUCCESS) return invalid("image: manifest is not valid JSON");
  simdjson::dom::element config;
  if (doc["config"].get(config) != simdjson::SUCCESS) return invalid("image: manifest has no config");
  SP_TRY_ASSIGN(BlobRef config_ref, descriptor(config));
  Plan plan;
  plan.config_hex = config_ref.hex;
  SP_TRY_ASSIGN(plan.config_json, read_verified(root_fd, config_ref));
  simdjson::dom::array layers;
  if (doc["layers"].get_array().get(layers) != simdjson::SUCCESS) return invalid("image: manifest has no layers array");
  for (simdjson::dom::element layer : layers) {
    std::string_view media_type;
    if (layer["mediaType"].get_string().get(media_type) != simdjson::SUCCESS) return invalid("image: layer has no mediaType");
    bool known = false;
    for (std::string_view t : kLayerTypes) known = known || t == media_type;
    if (!known) return invalid("image: unsupported layer media type");
    SP_TRY_ASSIGN(BlobRef ref, descriptor(layer));
    plan.layers.push_back(std::move(ref));
  }
  SP_TRY(attach_diff_ids(plan.config_json, plan.layers));
  return plan;
}

// Picks from an index the manifest for this host (or with no platform, or else the first),
// following nested indexes.
Result<Plan> plan_from_index(int root_fd, const std::string& index_json, int depth) {
  if (depth > kMaxIndexDepth) return invalid("image: image indexes nest too deeply");
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(index_json).get(doc) != simdjson::SUCCESS) return invalid("image: index is not valid JSON");
  simdjson::dom::array manifests;
  if (doc["manifests"].get_array().get(manifests) != simdjson::SUCCESS) return invalid("image: index has no manifests array");
  bool found = false;
  bool found_is_index = false;
  BlobRef chosen;
  for (simdjson::dom::element m : manifests) {
    std::string_view media_type;
    if (m["mediaType"].get_string().get(media_type) != simdjson::SUCCESS) continue;
    bool is_index = media_type == kOciIndex || media_type == kDockerList;
    if (!is_index && media_type != kOciManifest && media_type != kDockerManifest) continue;
    std::string_view arch;
    bool has_arch = m["platform"]["architecture"].get_string().get(arch) == simdjson::SUCCESS;
    bool preferred = !has_arch || arch == kHostArch;
    if (found && !preferred) continue;
    SP_TRY_ASSIGN(BlobRef ref, descriptor(m));
    chosen = std::move(ref);
    found_is_index = is_index;
    found = true;
    if (preferred) break;  // otherwise keep looking, with this one as the fallback
  }
  if (!found) return invalid("image: index lists no image manifest");
  SP_TRY_ASSIGN(std::string json, read_verified(root_fd, chosen));
  if (found_is_index) return plan_from_index(root_fd, json, depth + 1);
  return plan_from_manifest(root_fd, json);
}

// docker save: manifest.json = [{"Config": "<path>", "Layers": ["<path>", ...]}]; layers
// are checked against the config's rootfs.diff_ids (the sha256 of each uncompressed tar).
Result<Plan> plan_from_docker(int root_fd, const std::string& manifest_json) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(manifest_json).get(doc) != simdjson::SUCCESS) return invalid("image: manifest.json is not valid JSON");
  simdjson::dom::element first;
  if (doc.at(0).get(first) != simdjson::SUCCESS) return invalid("image: manifest.json lists no image");
  std::string_view config_path;
  if (first["Config"].get_string().get(config_path) != simdjson::SUCCESS) return invalid("image: manifest.json has no Config");
  std::vector<std::string> layer_paths;
  simdjson::dom::array layers;
  if (first["Layers"].get_array().get(layers) != simdjson::SUCCESS) return invalid("image: manifest.json has no Layers");
  for (simdjson::dom::element l : layers) {
    std::string_view p;
    if (l.get_string().get(p) != simdjson::SUCCESS) return invalid("image: manifest.json layer is not a string");
    layer_paths.emplace_back(p);
  }
  Plan plan;
  {
    SP_TRY_ASSIGN(UniqueFd fd, open_beneath(root_fd, config_path, O_RDONLY));
    SP_TRY_ASSIGN(plan.config_json, read_all(fd.get(), kMaxJsonBytes));
  }
  plan.config_hex = sha256_hex(plan.config_json);
  // A config stored under its digest ("<hex>.json" or blobs/sha256/<hex>) must match it.
  std::string_view base = config_path.substr(config_path.rfind('/') + 1);
  if (base.ends_with(".json")) base.remove_suffix(5);
  if (base.size() == 64 && base != plan.config_hex) return invalid("image: config content does not match its file name");
  // Layers carry no stored digest here: each is checked against its diff_id.
  for (std::string& p : layer_paths) plan.layers.push_back(BlobRef{std::move(p), "", -1, ""});
  SP_TRY(attach_diff_ids(plan.config_json, plan.layers));
  return plan;
}

Result<std::vector<std::string>> string_array(simdjson::dom::element obj, const char* key) {
  std::vector<std::string> out;
  simdjson::dom::element v;
  if (obj[key].get(v) != simdjson::SUCCESS || v.is_null()) return out;
  simdjson::dom::array arr;
  if (v.get_array().get(arr) != simdjson::SUCCESS) return invalid("image: config field is not an array of strings");
  for (simdjson::dom::element e : arr) {
    std::string_view s;
    if (e.get_string().get(s) != simdjson::SUCCESS) return invalid("image: config field is not an array of strings");
    out.emplace_back(s);
  }
  return out;
}

Status fill_info(const std::string& config_json, ImageInfo& info) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(config_json).get(doc) != simdjson::SUCCESS) return invalid("image: config is not valid JSON");
  simdjson::dom::element c;
  if (doc["config"].get(c) != simdjson::SUCCESS || c.is_null()) return {};  // an image with no run settings
  SP_TRY_ASSIGN(info.entrypoint, string_array(c, "Entrypoint"));
  SP_TRY_ASSIGN(info.cmd, string_array(c, "Cmd"));
  SP_TRY_ASSIGN(info.env, string_array(c, "Env"));
  std::string_view s;
  if (c["WorkingDir"].get_string().get(s) == simdjson::SUCCESS) info.working_dir = s;
  if (c["User"].get_string().get(s) == simdjson::SUCCESS) info.user = s;
  simdjson::dom::object ports;
  if (c["ExposedPorts"].get_object().get(ports) == simdjson::SUCCESS) {
    for (auto field : ports) info.exposed_ports.emplace_back(field.key);
  }
  return {};
}

// The store (see oci_import.h): <hex>/ holds rootfs/ and the `complete` marker, written last
// and holding kMarkerText (a tree without it, or from an older format, is never reused);
// .partial-*, .incoming-* and .stale-* are temporary trees, each flock'ed by its importer for
// as long as it works on it; `.lock` orders their creation against reclaim_stale.
constexpr const char* kMarkerName = "complete";
constexpr std::string_view kMarkerText = "sandpool image v2: layers checked against rootfs.diff_ids, ownership kept\n";
constexpr const char* kLockName = ".lock";
constexpr std::string_view kTempPrefixes[] = {".partial-", ".incoming-", ".stale-"};

// Removes a temporary tree below the store when it goes out of scope, unless released.
class TreeGuard {
 public:
  TreeGuard(int dirfd, std::string name) : dirfd_(dirfd), name_(std::move(name)) {}
  ~TreeGuard() {
    if (!name_.empty()) (void)remove_tree_at(dirfd_, name_.c_str());
  }
  TreeGuard(const TreeGuard&) = delete;
  TreeGuard& operator=(const TreeGuard&) = delete;
  void release() { name_.clear(); }

 private:
  int dirfd_;
  std::string name_;
};

Result<UniqueFd> lock_store(int store_fd, int op) {
  UniqueFd fd(openat(store_fd, kLockName, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return errno_error("image: open the store's lock file");
  while (flock(fd.get(), op) != 0) {
    if (errno != EINTR) return errno_error("image: lock the store");
  }
  return fd;
}

// A temporary directory below the store, held open and exclusively flock'ed: the lock lives
// as long as `fd` (or the importer's process), so reclaim_stale never takes a live one.
struct TempDir {
  std::string name;
  UniqueFd fd;
};

Result<TempDir> make_temp_dir(int store_fd, const std::string& store_dir, const std::string& prefix) {
  // Shared: a reclaim (exclusive) cannot run between mkdtemp and the flock.
  SP_TRY_ASSIGN(UniqueFd store_lock, lock_store(store_fd, LOCK_SH));
  std::string path = store_dir + "/" + prefix + "XXXXXX";
  if (mkdtemp(path.data()) == nullptr) return errno_error("image: create temporary directory in the store");
  TempDir t{path.substr(store_dir.size() + 1), UniqueFd()};
  t.fd.reset(openat(store_fd, t.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!t.fd || flock(t.fd.get(), LOCK_EX | LOCK_NB) != 0) {
    Error e = errno_error("image: lock a temporary directory in the store");
    unlinkat(store_fd, t.name.c_str(), AT_REMOVEDIR);
    return e;
  }
  return t;
}

// The temporaries below the store whose flock is free, returned locked by us.
std::vector<std::pair<std::string, UniqueFd>> dead_temporaries(int store_fd) {
  std::vector<std::pair<std::string, UniqueFd>> dead;
  UniqueFd dup(fcntl(store_fd, F_DUPFD_CLOEXEC, 0));
  DIR* dir = dup ? fdopendir(dup.get()) : nullptr;
  if (dir == nullptr) return dead;
  dup.release();
  std::vector<std::string> names;
  while (dirent* e = readdir(dir)) {
    std::string_view n = e->d_name;
    for (std::string_view p : kTempPrefixes) {
      if (n.starts_with(p)) names.emplace_back(n);
    }
  }
  closedir(dir);
  for (const std::string& name : names) {
    UniqueFd fd(openat(store_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOTDIR || errno == ELOOP) unlinkat(store_fd, name.c_str(), 0);
      continue;
    }
    if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // a live import's
    dead.emplace_back(name, std::move(fd));
  }
  return dead;
}

// Removes the temporary trees of importers that died (crash, kill, power loss): those whose
// flock is free. Live imports' trees, in this process or another, are left alone.
void reclaim_stale(int store_fd) {
  std::vector<std::pair<std::string, UniqueFd>> dead;  // flock'ed by us from here on
  {
    auto store_lock = lock_store(store_fd, LOCK_EX);
    if (!store_lock.ok()) return;  // the import itself reports a store it cannot use
    dead = dead_temporaries(store_fd);
  }
  // Removed outside the store lock: a large tree must not hold up other imports.
  for (const auto& [name, fd] : dead) (void)remove_tree_at(store_fd, name.c_str());
}

// True when the tree in `dirfd` is complete and of this format.
bool marker_ok(int dirfd) {
  UniqueFd fd(openat(dirfd, kMarkerName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return false;
  auto text = read_all(fd.get(), 4096);
  return text.ok() && *text == kMarkerText;
}

bool is_complete(int store_fd, const std::string& hex) {
  UniqueFd fd(openat(store_fd, hex.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  return fd && marker_ok(fd.get());
}

Status write_marker(int dirfd) {
  UniqueFd fd(openat(dirfd, kMarkerName, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) return errno_error("image: write complete marker");
  if (write(fd.get(), kMarkerText.data(), kMarkerText.size()) != static_cast<ssize_t>(kMarkerText.size())) {
    return errno_error("image: write complete marker");
  }
  if (fsync(fd.get()) != 0 || fsync(dirfd) != 0) return errno_error("image: flush complete marker");
  return {};
}

// Renames the finished tree `tmp` to `hex`. Returns false when a complete tree was there
// already (a concurrent import won: the caller uses it and drops its own). A tree at `hex`
// that is incomplete or of an older format is moved aside (under its flock, so one importer
// does it) and removed.
Result<bool> install(int store_fd, const std::string& tmp, const std::string& hex) {
  for (int attempt = 0; attempt < 500; ++attempt) {
    if (renameat2(store_fd, tmp.c_str(), store_fd, hex.c_str(), RENAME_NOREPLACE) == 0) return true;
    if (errno != EEXIST) return errno_error("image: rename rootfs into place");
    UniqueFd old(openat(store_fd, hex.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!old) {
      if (errno == ENOTDIR || errno == ELOOP) {
        if (unlinkat(store_fd, hex.c_str(), 0) != 0 && errno != ENOENT) return errno_error("image: remove a non-directory in the store");
      } else if (errno != ENOENT) {
        return errno_error("image: open the store's tree for this image");
      }
      continue;
    }
    if (marker_ok(old.get())) return false;
    if (flock(old.get(), LOCK_EX | LOCK_NB) != 0) {  // another importer is replacing it
      usleep(10'000);
      continue;
    }
    std::string aside = ".stale-" + hex.substr(0, 12) + "-" + std::to_string(gettid()) + "-" + std::to_string(attempt);
    if (renameat2(store_fd, hex.c_str(), store_fd, aside.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == ENOENT || errno == EEXIST) continue;
      return errno_error("image: move an outdated tree aside");
    }
    (void)remove_tree_at(store_fd, aside.c_str());  // what fails is left to the next reclaim
  }
  return Error{EBUSY, "image: the store's tree for this image stayed busy"};
}

// Unpacks the plan's layers into a temporary tree, checking each layer's stored digest and
// size and its uncompressed digest (diff_id) as it is read, then renames the tree to <hex>.
Status build_rootfs(int store_fd, const std::string& store_dir, int root_fd, const Plan& plan,
                    const ImportLimits& limits) {
  SP_TRY_ASSIGN(TempDir tmp, make_temp_dir(store_fd, store_dir, ".partial-" + plan.config_hex.substr(0, 12) + "-"));
  TreeGuard guard(store_fd, tmp.name);  // destroyed before tmp: removal runs under the flock
  if (mkdirat(tmp.fd.get(), "rootfs", 0755) != 0) return errno_error("image: create rootfs");
  UniqueFd rootfs(openat(tmp.fd.get(), "rootfs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!rootfs) return errno_error("image: open rootfs");
  UnpackCounters counters;
  for (const BlobRef& layer : plan.layers) {
    SP_TRY_ASSIGN(UniqueFd fd, open_beneath(root_fd, layer.path, O_RDONLY));
    ArchiveDigests d;
    d.max_stored_bytes = layer.size;
    SP_TRY(unpack_archive(fd.get(), rootfs.get(), ArchiveKind::Layer, limits, counters, &d));
    if (layer.size >= 0 && d.stored_bytes != static_cast<uint64_t>(layer.size)) {
      return invalid("image: blob size does not match its descriptor");
    }
    if (!layer.hex.empty() && d.stored_sha256 != layer.hex) {
      return invalid("image: blob content does not match its sha256 digest");
    }
    if (d.tar_sha256 != layer.diff_hex) {
      return invalid("image: a layer's uncompressed sha256 does not match the config's rootfs.diff_ids (tampered or out of order)");
    }
  }
  // Complete on disk before it can be found complete: data first, the marker last.
  if (syncfs(rootfs.get()) != 0) return errno_error("image: flush the unpacked image to disk");
  SP_TRY(write_marker(tmp.fd.get()));
  SP_TRY_ASSIGN(bool installed, install(store_fd, tmp.name, plan.config_hex));
  if (installed) {
    guard.release();
    if (fsync(store_fd) != 0) return errno_error("image: flush the store directory");
  }
  return {};
}

}  // namespace

Result<ImageInfo> import_image(const std::string& source, const std::string& store_dir,
                               const ImportLimits& limits) {
  if (mkdir(store_dir.c_str(), 0755) != 0 && errno != EEXIST) return errno_error("image: create store directory");
  UniqueFd store(open(store_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!store) return errno_error("image: open store directory");
  reclaim_stale(store.get());

  // 1. The layout root: the source directory, or the source tarball unpacked below the store.
  struct stat st;
  if (stat(source.c_str(), &st) != 0) return errno_error("image: stat source");
  UniqueFd root;
  TempDir staging;
  if (S_ISDIR(st.st_mode)) {
    root.reset(open(source.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) return errno_error("image: open source directory");
  } else if (S_ISREG(st.st_mode)) {
    SP_TRY_ASSIGN(staging, make_temp_dir(store.get(), store_dir, ".incoming-"));
  } else {
    return invalid("image: source is neither a directory nor a tarball");
  }
  TreeGuard staging_guard(store.get(), staging.name);
  if (!staging.name.empty()) {
    root.reset(fcntl(staging.fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!root) return errno_error("image: open staging directory");
    UniqueFd tar(open(source.c_str(), O_RDONLY | O_CLOEXEC));
    if (!tar) return errno_error("image: open source tarball");
    UnpackCounters counters;
    SP_TRY(unpack_archive(tar.get(), root.get(), ArchiveKind::Bundle, limits, counters));
  }

  // 2. index.json (OCI layout, also written by docker save ≥ 25) or else manifest.json.
  Plan plan;
  auto index = open_beneath(root.get(), "index.json", O_RDONLY);
  if (index.ok()) {
    SP_TRY_ASSIGN(std::string json, read_all(index->get(), kMaxJsonBytes));
    SP_TRY_ASSIGN(plan, plan_from_index(root.get(), json, 0));
  } else if (index.error().code == kENotFound) {
    auto manifest = open_beneath(root.get(), "manifest.json", O_RDONLY);
    if (!manifest.ok()) {
      if (manifest.error().code == kENotFound) return invalid("image: source has neither index.json nor manifest.json");
      return manifest.error();
    }
    SP_TRY_ASSIGN(std::string json, read_all(manifest->get(), kMaxJsonBytes));
    SP_TRY_ASSIGN(plan, plan_from_docker(root.get(), json));
  } else {
    return index.error();
  }

  // 3. The run settings, then the rootfs (unpacked unless a complete one exists).
  ImageInfo info;
  info.digest = "sha256:" + plan.config_hex;
  info.rootfs = store_dir + "/" + plan.config_hex + "/rootfs";
  SP_TRY(fill_info(plan.config_json, info));
  if (is_complete(store.get(), plan.config_hex)) {
    info.reused = true;
    return info;
  }
  SP_TRY(build_rootfs(store.get(), store_dir, root.get(), plan, limits));
  return info;
}

}  // namespace sp::image
