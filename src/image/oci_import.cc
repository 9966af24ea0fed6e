// OCI / docker-save image import: resolves index → manifest → config, verifies blobs, and
// has unpack.cc apply the layers; the on-disk safety rules live in unpack.cc.
#include "image/oci_import.h"

#include <fcntl.h>
#include <simdjson.h>
#include <stdlib.h>
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
  std::string hex;
  int64_t size = -1;  // -1: not stated
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

// Hashes the whole of `fd` and rewinds it; fails unless the digest (and size, if stated) match.
Status verify_fd(int fd, const BlobRef& ref) {
  Sha256 hash;
  uint64_t size = 0;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("image: read blob");
    }
    if (n == 0) break;
    hash.update(buf, static_cast<size_t>(n));
    size += static_cast<uint64_t>(n);
  }
  if (ref.size >= 0 && size != static_cast<uint64_t>(ref.size)) return invalid("image: blob size does not match its descriptor");
  if (hash.hex_digest() != ref.hex) return invalid("image: blob content does not match its sha256 digest");
  if (lseek(fd, 0, SEEK_SET) != 0) return errno_error("image: rewind blob");
  return {};
}

Result<std::string> read_verified(int root_fd, const BlobRef& ref) {
  SP_TRY_ASSIGN(UniqueFd fd, open_beneath(root_fd, ref.path, O_RDONLY));
  SP_TRY(verify_fd(fd.get(), ref));
  return read_all(fd.get(), kMaxJsonBytes);
}

Result<BlobRef> descriptor(simdjson::dom::element e) {
  std::string_view digest;
  if (e["digest"].get_string().get(digest) != simdjson::SUCCESS) return invalid("image: descriptor has no digest");
  SP_TRY_ASSIGN(std::string hex, parse_digest(digest));
  BlobRef ref{"blobs/sha256/" + hex, hex, -1};
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

  simdjson::dom::parser config_parser;
  simdjson::dom::element config;
  simdjson::dom::array diff_ids;
  if (config_parser.parse(plan.config_json).get(config) != simdjson::SUCCESS ||
      config["rootfs"]["diff_ids"].get_array().get(diff_ids) != simdjson::SUCCESS) {
    return invalid("image: config has no rootfs.diff_ids");
  }
  if (diff_ids.size() != layer_paths.size()) return invalid("image: layer count differs from rootfs.diff_ids");
  size_t i = 0;
  for (simdjson::dom::element d : diff_ids) {
    std::string_view digest;
    if (d.get_string().get(digest) != simdjson::SUCCESS) return invalid("image: diff_id is not a string");
    SP_TRY_ASSIGN(std::string hex, parse_digest(digest));
    plan.layers.push_back(BlobRef{layer_paths[i++], hex, -1});
  }
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

// Removes a temporary tree below the store when it goes out of scope, unless released.
class TreeGuard {
 public:
  TreeGuard(int dirfd, std::string name) : dirfd_(dirfd), name_(std::move(name)) {}
  ~TreeGuard() {
    if (!name_.empty()) (void)remove_tree_at(dirfd_, name_.c_str());
  }
  void release() { name_.clear(); }

 private:
  int dirfd_;
  std::string name_;
};

// mkdtemp below the store; returns the new directory's name.
Result<std::string> make_temp_dir(const std::string& store_dir, const std::string& prefix) {
  std::string path = store_dir + "/" + prefix + "XXXXXX";
  if (mkdtemp(path.data()) == nullptr) return errno_error("image: create temporary directory in the store");
  return path.substr(store_dir.size() + 1);
}

bool is_complete(int store_fd, const std::string& hex) {
  struct stat st;
  return fstatat(store_fd, (hex + "/complete").c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

// Unpacks the plan's layers into a temporary tree and renames it to <hex>.
Status build_rootfs(int store_fd, const std::string& store_dir, int root_fd, const Plan& plan,
                    const ImportLimits& limits) {
  SP_TRY_ASSIGN(std::string tmp, make_temp_dir(store_dir, ".partial-" + plan.config_hex.substr(0, 12) + "-"));
  TreeGuard guard(store_fd, tmp);
  if (mkdirat(store_fd, (tmp + "/rootfs").c_str(), 0755) != 0) return errno_error("image: create rootfs");
  UniqueFd rootfs(openat(store_fd, (tmp + "/rootfs").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!rootfs) return errno_error("image: open rootfs");
  UnpackCounters counters;
  for (const BlobRef& layer : plan.layers) {
    SP_TRY_ASSIGN(UniqueFd fd, open_beneath(root_fd, layer.path, O_RDONLY));
    SP_TRY(verify_fd(fd.get(), layer));
    SP_TRY(unpack_archive(fd.get(), rootfs.get(), ArchiveKind::Layer, limits, counters));
  }
  UniqueFd marker(openat(store_fd, (tmp + "/complete").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!marker) return errno_error("image: write complete marker");
  if (renameat(store_fd, tmp.c_str(), store_fd, plan.config_hex.c_str()) != 0) {
    if (errno != EEXIST && errno != ENOTEMPTY) return errno_error("image: rename rootfs into place");
    if (is_complete(store_fd, plan.config_hex)) return {};  // a concurrent import won; use its tree
    // A stale, incomplete tree from an interrupted import: replace it.
    SP_TRY(remove_tree_at(store_fd, plan.config_hex.c_str()));
    if (renameat(store_fd, tmp.c_str(), store_fd, plan.config_hex.c_str()) != 0) {
      return errno_error("image: rename rootfs into place");
    }
  }
  guard.release();
  return {};
}

}  // namespace

Result<ImageInfo> import_image(const std::string& source, const std::string& store_dir,
                               const ImportLimits& limits) {
  if (mkdir(store_dir.c_str(), 0755) != 0 && errno != EEXIST) return errno_error("image: create store directory");
  UniqueFd store(open(store_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!store) return errno_error("image: open store directory");

  // 1. The layout root: the source directory, or the source tarball unpacked below the store.
  struct stat st;
  if (stat(source.c_str(), &st) != 0) return errno_error("image: stat source");
  UniqueFd root;
  std::string staging;
  if (S_ISDIR(st.st_mode)) {
    root.reset(open(source.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) return errno_error("image: open source directory");
  } else if (S_ISREG(st.st_mode)) {
    SP_TRY_ASSIGN(staging, make_temp_dir(store_dir, ".incoming-"));
  } else {
    return invalid("image: source is neither a directory nor a tarball");
  }
  TreeGuard staging_guard(store.get(), staging);
  if (!staging.empty()) {
    root.reset(openat(store.get(), staging.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
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
