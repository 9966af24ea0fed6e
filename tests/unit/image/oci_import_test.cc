// Tests for image/oci_import.h and image/unpack.h: images are built here with libarchive's
// write API (OCI layouts, their tarballs, docker-save tarballs), good and hostile.
#include <archive.h>
#include <archive_entry.h>
#include <doctest/doctest.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "image/oci_import.h"
#include "util/sha256.h"

namespace sp::image {
namespace {

namespace fs = std::filesystem;

enum class Compression { None, Gzip, Zstd };

struct TarEntry {
  std::string path;
  char kind = 'f';  // f file, d directory, l symlink, h hardlink, c char device, p FIFO
  std::string data;  // file content, or link target
  mode_t mode = 0644;
  la_int64_t uid = 0, gid = 0;
};

la_ssize_t append_cb(archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

bool zstd_writable() {
  archive* a = archive_write_new();
  bool ok = archive_write_add_filter_zstd(a) == ARCHIVE_OK;
  archive_write_free(a);
  return ok;
}

std::string make_tar(const std::vector<TarEntry>& entries, Compression c = Compression::None) {
  std::string out;
  archive* a = archive_write_new();
  REQUIRE(archive_write_set_format_pax_restricted(a) == ARCHIVE_OK);
  if (c == Compression::Gzip) REQUIRE(archive_write_add_filter_gzip(a) == ARCHIVE_OK);
  if (c == Compression::Zstd) REQUIRE(archive_write_add_filter_zstd(a) == ARCHIVE_OK);
  // No padding of the compressed stream to a 10 KiB block: zstd readers reject trailing zeros.
  REQUIRE(archive_write_set_bytes_in_last_block(a, 1) == ARCHIVE_OK);
  REQUIRE(archive_write_open(a, &out, nullptr, append_cb, nullptr) == ARCHIVE_OK);
  for (const TarEntry& e : entries) {
    archive_entry* ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.path.c_str());
    archive_entry_set_perm(ae, e.mode);
    archive_entry_set_uid(ae, e.uid);
    archive_entry_set_gid(ae, e.gid);
    switch (e.kind) {
      case 'f': archive_entry_set_filetype(ae, AE_IFREG); archive_entry_set_size(ae, static_cast<la_int64_t>(e.data.size())); break;
      case 'd': archive_entry_set_filetype(ae, AE_IFDIR); break;
      case 'l': archive_entry_set_filetype(ae, AE_IFLNK); archive_entry_set_symlink(ae, e.data.c_str()); break;
      case 'h': archive_entry_set_filetype(ae, AE_IFREG); archive_entry_set_hardlink(ae, e.data.c_str()); break;
      case 'c': archive_entry_set_filetype(ae, AE_IFCHR); archive_entry_set_rdev(ae, makedev(1, 3)); break;
      case 'p': archive_entry_set_filetype(ae, AE_IFIFO); break;
    }
    REQUIRE(archive_write_header(a, ae) == ARCHIVE_OK);
    if (e.kind == 'f' && !e.data.empty()) {
      REQUIRE(archive_write_data(a, e.data.data(), e.data.size()) == static_cast<la_ssize_t>(e.data.size()));
    }
    archive_entry_free(ae);
  }
  REQUIRE(archive_write_close(a) == ARCHIVE_OK);
  archive_write_free(a);
  return out;
}

void write_file(const fs::path& p, const std::string& data) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A temporary directory with `outside/` (must stay empty: the sentinel for escapes),
// `src/` and `store/`; removed with everything in it at the end of the test.
struct TempDir {
  fs::path dir;
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/sp-image-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    fs::create_directories(dir / "outside");
    fs::create_directories(dir / "src");
  }
  ~TempDir() { fs::remove_all(dir); }
  fs::path src() const { return dir / "src"; }
  std::string store() const { return (dir / "store").string(); }
  bool outside_untouched() const { return fs::is_empty(dir / "outside") && !fs::exists(dir / "pwned"); }
  // Nothing but complete images (no temporary trees) in the store; its lock file may stay.
  bool store_clean() const {
    if (!fs::exists(store())) return true;
    for (const auto& e : fs::directory_iterator(store())) {
      std::string n = e.path().filename().string();
      if (n.front() == '.' && n != ".lock") return false;
    }
    return true;
  }
  // No image at all (a refused import left nothing).
  bool store_empty() const {
    if (!fs::exists(store())) return true;
    for (const auto& e : fs::directory_iterator(store())) {
      if (e.path().filename() != ".lock") return false;
    }
    return true;
  }
};

struct Layer {
  std::string blob;  // compressed bytes as stored
  std::string media_type;
  std::string diff_id;  // sha256 of the uncompressed tar
};

Layer layer(const std::vector<TarEntry>& entries, Compression c) {
  static constexpr const char* kTypes[] = {"application/vnd.oci.image.layer.v1.tar",
                                           "application/vnd.oci.image.layer.v1.tar+gzip",
                                           "application/vnd.oci.image.layer.v1.tar+zstd"};
  return Layer{make_tar(entries, c), kTypes[static_cast<int>(c)], sha256_hex(make_tar(entries))};
}

std::string config_json(const std::vector<Layer>& layers) {
  std::string diff_ids;
  for (const Layer& l : layers) diff_ids += std::string(diff_ids.empty() ? "" : ",") + "\"sha256:" + l.diff_id + "\"";
  return R"({"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/app"],"Cmd":["--port","8080"],)"
         R"("Env":["PATH=/usr/bin:/bin","GREETING=hi"],"WorkingDir":"/srv","User":"1000:1000",)"
         R"("ExposedPorts":{"8080/tcp":{},"9090/udp":{}}},"rootfs":{"type":"layers","diff_ids":[)" +
         diff_ids + "]}}";
}

std::string add_blob(const fs::path& layout, const std::string& data) {
  std::string hex = sha256_hex(data);
  write_file(layout / "blobs" / "sha256" / hex, data);
  return hex;
}

std::string descriptor(const std::string& media_type, const std::string& data, const std::string& hex) {
  return R"({"mediaType":")" + media_type + R"(","digest":"sha256:)" + hex + R"(","size":)" +
         std::to_string(data.size()) + "}";
}

// Writes an OCI layout of `layers` into `layout`; returns the config digest's hex.
std::string write_oci(const fs::path& layout, const std::vector<Layer>& layers) {
  write_file(layout / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  std::string config = config_json(layers);
  std::string config_hex = add_blob(layout, config);
  std::string layer_descs;
  for (const Layer& l : layers) {
    layer_descs += (layer_descs.empty() ? "" : ",") + descriptor(l.media_type, l.blob, add_blob(layout, l.blob));
  }
  std::string manifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
                         descriptor("application/vnd.oci.image.config.v1+json", config, config_hex) +
                         R"(,"layers":[)" + layer_descs + "]}";
  std::string manifest_hex = add_blob(layout, manifest);
  write_file(layout / "index.json",
             R"({"schemaVersion":2,"manifests":[)" +
                 descriptor("application/vnd.oci.image.manifest.v1+json", manifest, manifest_hex) + "]}");
  return config_hex;
}

// Tars every file below `dir` (paths relative to it) into `out`.
void tar_directory(const fs::path& dir, const fs::path& out) {
  std::vector<TarEntry> entries;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string rel = fs::relative(e.path(), dir).string();
    if (e.is_directory()) entries.push_back({rel, 'd', "", 0755});
    else entries.push_back({rel, 'f', read_file(e.path())});
  }
  write_file(out, make_tar(entries));
}

std::vector<TarEntry> base_entries() {
  return {{"etc", 'd', "", 0755},
          {"etc/keep", 'f', "keep"},
          {"etc/gone", 'f', "gone"},
          {"opq", 'd', "", 0755},
          {"opq/old", 'f', "old"},
          {"opq/sub/deep", 'f', "deep"},
          {"./bin/sh", 'f', "#!shell", 0755},
          {"bin/link", 'l', "sh"},
          {"bin/abs", 'l', "/bin/sh"},
          {"bin/hard", 'h', "bin/sh"},
          {"usr/suid", 'f', "s", 06755}};
}

std::vector<TarEntry> upper_entries() {
  return {{"etc/.wh.gone", 'f', ""},
          {"opq", 'd', "", 0755},
          {"opq/new", 'f', "new"},  // written by this layer before the marker: survives it
          {"opq/.wh..wh..opq", 'f', ""}};
}

void check_rootfs(const fs::path& r) {
  CHECK(read_file(r / "etc/keep") == "keep");
  CHECK_FALSE(fs::exists(r / "etc/gone"));
  CHECK_FALSE(fs::exists(r / "etc/.wh.gone"));
  CHECK_FALSE(fs::exists(r / "opq/old"));
  CHECK_FALSE(fs::exists(r / "opq/sub"));
  CHECK_FALSE(fs::exists(r / "opq/.wh..wh..opq"));
  CHECK(read_file(r / "opq/new") == "new");
  CHECK(read_file(r / "bin/sh") == "#!shell");
  CHECK(fs::read_symlink(r / "bin/link") == "sh");
  CHECK(fs::read_symlink(r / "bin/abs") == "/bin/sh");
  struct stat a, b;
  REQUIRE(lstat((r / "bin/sh").c_str(), &a) == 0);
  REQUIRE(lstat((r / "bin/hard").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK((a.st_mode & 0777) == 0755);
  struct stat s;
  REQUIRE(lstat((r / "usr/suid").c_str(), &s) == 0);
  CHECK((s.st_mode & 07777) == 0755);  // setuid and setgid dropped
}

TEST_CASE("OCI layout: layers in order, whiteouts, opaque directory, run settings") {
  TempDir t;
  Compression upper = zstd_writable() ? Compression::Zstd : Compression::Gzip;
  if (upper != Compression::Zstd) MESSAGE("libarchive cannot write zstd here; the upper layer is gzip");
  std::vector<Layer> layers = {layer(base_entries(), Compression::Gzip), layer(upper_entries(), upper),
                               layer({{"etc/added", 'f', "added"}}, Compression::None)};
  std::string hex = write_oci(t.src(), layers);

  auto r = import_image(t.src().string(), t.store());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->digest == "sha256:" + hex);
  CHECK(r->rootfs == t.store() + "/" + hex + "/rootfs");
  CHECK_FALSE(r->reused);
  check_rootfs(r->rootfs);
  CHECK(read_file(fs::path(r->rootfs) / "etc/added") == "added");
  CHECK(r->entrypoint == std::vector<std::string>{"/bin/app"});
  CHECK(r->cmd == std::vector<std::string>{"--port", "8080"});
  CHECK(r->env == std::vector<std::string>{"PATH=/usr/bin:/bin", "GREETING=hi"});
  CHECK(r->working_dir == "/srv");
  CHECK(r->user == "1000:1000");
  CHECK(r->exposed_ports == std::vector<std::string>{"8080/tcp", "9090/udp"});
  CHECK(t.store_clean());

  SUBCASE("a second import reuses the unpacked rootfs") {
    write_file(fs::path(r->rootfs) / "marker-from-first-import", "x");
    auto again = import_image(t.src().string(), t.store());
    REQUIRE_MESSAGE(again.ok(), again.error().message());
    CHECK(again->reused);
    CHECK(again->digest == r->digest);
    CHECK(fs::exists(fs::path(again->rootfs) / "marker-from-first-import"));
  }
  SUBCASE("an incomplete tree left by an interrupted import is replaced") {
    fs::remove(fs::path(t.store()) / hex / "complete");
    auto again = import_image(t.src().string(), t.store());
    REQUIRE_MESSAGE(again.ok(), again.error().message());
    CHECK_FALSE(again->reused);
    check_rootfs(again->rootfs);
    CHECK(t.store_clean());
  }
}

TEST_CASE("OCI layout as a tarball") {
  TempDir t;
  std::string hex = write_oci(t.src() / "layout", {layer(base_entries(), Compression::Gzip), layer(upper_entries(), Compression::Gzip)});
  tar_directory(t.src() / "layout", t.src() / "image.tar");
  auto r = import_image((t.src() / "image.tar").string(), t.store());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->digest == "sha256:" + hex);
  check_rootfs(r->rootfs);
  CHECK(t.store_clean());  // the unpacked tarball is gone
}

TEST_CASE("docker save tarball") {
  TempDir t;
  std::vector<Layer> layers = {layer(base_entries(), Compression::None), layer(upper_entries(), Compression::None)};
  fs::path d = t.src() / "docker";
  std::string config = config_json(layers);
  std::string config_hex = sha256_hex(config);
  write_file(d / (config_hex + ".json"), config);
  write_file(d / "aaa/layer.tar", layers[0].blob);
  write_file(d / "bbb/layer.tar", layers[1].blob);
  write_file(d / "manifest.json", R"([{"Config":")" + config_hex + R"(.json","RepoTags":["app:1"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}])");
  tar_directory(d, t.src() / "docker.tar");

  auto r = import_image((t.src() / "docker.tar").string(), t.store());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->digest == "sha256:" + config_hex);
  check_rootfs(r->rootfs);
  CHECK(r->cmd == std::vector<std::string>{"--port", "8080"});

  SUBCASE("a layer that does not match its diff_id is rejected") {
    write_file(d / "bbb/layer.tar", layers[0].blob);
    fs::remove_all(t.store());
    auto bad = import_image(d.string(), t.store());
    REQUIRE_FALSE(bad.ok());
    CHECK(std::string(bad.error().where).find("sha256") != std::string::npos);
  }
}

void check_rejected(const TempDir& t, const Result<ImageInfo>& r, const char* fragment);

#if defined(__x86_64__)
TEST_CASE("a nested multi-platform index resolves to this host's manifest") {
  TempDir t;
  fs::path lay = t.src();
  std::string hex = write_oci(lay, {layer(base_entries(), Compression::Gzip), layer(upper_entries(), Compression::Gzip)});
  // The manifest write_oci made is the amd64 one; add an arm64 decoy listed first.
  std::string amd64_index = read_file(lay / "index.json");
  std::string amd64_desc = amd64_index.substr(amd64_index.find('[') + 1);
  amd64_desc = amd64_desc.substr(0, amd64_desc.rfind(']'));
  amd64_desc.insert(amd64_desc.size() - 1, R"(,"platform":{"architecture":"amd64","os":"linux"})");
  std::string decoy = R"({"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:)" + std::string(64, '0') +
                      R"(","size":1},"layers":[]})";
  std::string decoy_desc = descriptor("application/vnd.oci.image.manifest.v1+json", decoy, add_blob(lay, decoy));
  decoy_desc.insert(decoy_desc.size() - 1, R"(,"platform":{"architecture":"arm64","os":"linux"})");
  std::string nested = R"({"schemaVersion":2,"manifests":[)" + decoy_desc + "," + amd64_desc + "]}";
  write_file(lay / "index.json", R"({"schemaVersion":2,"manifests":[)" +
                                     descriptor("application/vnd.oci.image.index.v1+json", nested, add_blob(lay, nested)) + "]}");
  auto r = import_image(lay.string(), t.store());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(r->digest == "sha256:" + hex);
  check_rootfs(r->rootfs);
}
#endif

TEST_CASE("a docker-save config whose content does not match its file name is rejected") {
  TempDir t;
  std::vector<Layer> layers = {layer(base_entries(), Compression::None)};
  std::string config = config_json(layers);
  write_file(t.src() / (std::string(64, 'a') + ".json"), config);
  write_file(t.src() / "l/layer.tar", layers[0].blob);
  write_file(t.src() / "manifest.json", R"([{"Config":")" + std::string(64, 'a') + R"(.json","Layers":["l/layer.tar"]}])");
  check_rejected(t, import_image(t.src().string(), t.store()), "file name");
}

TEST_CASE("a blob whose content does not match its digest is rejected") {
  TempDir t;
  Layer l = layer(base_entries(), Compression::Gzip);
  write_oci(t.src(), {l});
  write_file(t.src() / "blobs/sha256" / sha256_hex(l.blob), l.blob.substr(0, l.blob.size() - 1) + "x");
  auto r = import_image(t.src().string(), t.store());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == kEInvalid);
  CHECK(std::string(r.error().where).find("sha256") != std::string::npos);
  CHECK(t.store_clean());
  CHECK(t.store_empty());
}

// Imports a one-layer image of `entries`; returns the result for the caller to check.
Result<ImageInfo> import_one(const TempDir& t, const std::vector<TarEntry>& entries, const ImportLimits& limits = {}) {
  fs::remove_all(t.src());
  write_oci(t.src(), {layer(entries, Compression::Gzip)});
  return import_image(t.src().string(), t.store(), limits);
}

void check_rejected(const TempDir& t, const Result<ImageInfo>& r, const char* fragment) {
  REQUIRE_FALSE(r.ok());
  INFO(r.error().message());
  CHECK(std::string(r.error().where).find(fragment) != std::string::npos);
  CHECK(t.outside_untouched());
  CHECK(t.store_clean());
}

TEST_CASE("hostile layers are rejected and write nothing outside the store") {
  TempDir t;
  std::string outside = (t.dir / "outside").string();
  check_rejected(t, import_one(t, {{outside + "/abs", 'f', "x"}}), "absolute");
  check_rejected(t, import_one(t, {{"a/../../../../../pwned", 'f', "x"}}), "'..'");
  check_rejected(t, import_one(t, {{"../../../pwned", 'f', "x"}}), "'..'");
  check_rejected(t, import_one(t, {{"esc", 'l', "../../../.."}}), "climbs above");
  check_rejected(t, import_one(t, {{"d/esc", 'l', "../../outside"}}), "climbs above");
  // An absolute symlink is kept (it resolves inside the rootfs at run time) but is never
  // followed while unpacking: writing through it, or through a relative one, is refused.
  check_rejected(t, import_one(t, {{"abs", 'l', outside}, {"abs/pwned", 'f', "x"}}), "symlink");
  check_rejected(t, import_one(t, {{"sub", 'd', "", 0755}, {"up", 'l', "sub"}, {"up/x", 'f', "x"}}), "symlink");
  check_rejected(t, import_one(t, {{"h", 'h', "../../../secret"}}), "hardlink");
  check_rejected(t, import_one(t, {{"h", 'h', "/etc/passwd"}}), "hardlink");
  check_rejected(t, import_one(t, {{"abs", 'l', "/etc"}, {"h", 'h', "abs/passwd"}}), "symlink");
  check_rejected(t, import_one(t, {{"etc/.wh..", 'f', ""}}), "whiteout");
  CHECK(fs::exists("/etc/passwd"));
}

TEST_CASE("the abs-then-directory case replaces the symlink instead of following it") {
  TempDir t;
  std::string outside = (t.dir / "outside").string();
  auto r = import_one(t, {{"abs", 'l', outside}, {"abs", 'd', "", 0755}, {"abs/file", 'f', "x"}});
  // Either outcome is safe; what matters is that nothing lands outside.
  if (r.ok()) CHECK(fs::is_directory(fs::symlink_status(fs::path(r->rootfs) / "abs")));
  CHECK(t.outside_untouched());
}

TEST_CASE("device nodes and FIFOs are skipped, setgid dropped") {
  TempDir t;
  auto r = import_one(t, {{"dev/null", 'c', ""}, {"fifo", 'p', ""}, {"sgid", 'f', "g", 02755}, {"ok", 'f', "ok"}});
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK_FALSE(fs::exists(fs::symlink_status(fs::path(r->rootfs) / "dev/null")));
  CHECK_FALSE(fs::exists(fs::symlink_status(fs::path(r->rootfs) / "fifo")));
  CHECK(read_file(fs::path(r->rootfs) / "ok") == "ok");
  struct stat s;
  REQUIRE(lstat((fs::path(r->rootfs) / "sgid").c_str(), &s) == 0);
  CHECK((s.st_mode & 07777) == 0755);
}

TEST_CASE("a whiteout of a missing path hides nothing and creates nothing") {
  TempDir t;
  auto r = import_one(t, {{"ok", 'f', "ok"}, {"nowhere/deeper/.wh.x", 'f', ""}, {".wh.missing", 'f', ""}});
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(read_file(fs::path(r->rootfs) / "ok") == "ok");
  CHECK_FALSE(fs::exists(fs::path(r->rootfs) / "nowhere"));
}

TEST_CASE("entry-count, total-size and per-file limits") {
  TempDir t;
  ImportLimits few_entries;
  few_entries.max_entries = 3;
  check_rejected(t, import_one(t, {{"a", 'f', "1"}, {"b", 'f', "2"}, {"c", 'f', "3"}, {"d", 'f', "4"}}, few_entries),
                 "entries");
  ImportLimits small_total;
  small_total.max_total_bytes = 1000;
  check_rejected(t, import_one(t, {{"a", 'f', std::string(600, 'a')}, {"b", 'f', std::string(600, 'b')}}, small_total),
                 "total");
  ImportLimits small_file;
  small_file.max_file_bytes = 1000;
  check_rejected(t, import_one(t, {{"big", 'f', std::string(2000, 'z')}}, small_file), "per-file");
  auto ok = import_one(t, {{"a", 'f', std::string(600, 'a')}}, small_file);
  CHECK_MESSAGE(ok.ok(), "a file under every limit is accepted");
}

TEST_CASE("an image tarball holding a symlink or an escaping path is rejected") {
  TempDir t;
  write_file(t.src() / "link.tar", make_tar({{"index.json", 'l', "/etc/passwd"}}));
  check_rejected(t, import_image((t.src() / "link.tar").string(), t.store()), "only files and directories");
  write_file(t.src() / "dots.tar", make_tar({{"../pwned", 'f', "x"}}));
  check_rejected(t, import_image((t.src() / "dots.tar").string(), t.store()), "'..'");
  write_file(t.src() / "empty.tar", make_tar({{"readme", 'f', "x"}}));
  check_rejected(t, import_image((t.src() / "empty.tar").string(), t.store()), "neither index.json");
  write_file(t.src() / "junk.tar", std::string(1000, 'j'));
  check_rejected(t, import_image((t.src() / "junk.tar").string(), t.store()), "archive");
}

TEST_CASE("malformed manifests are errors, not crashes") {
  TempDir t;
  write_oci(t.src(), {layer(base_entries(), Compression::Gzip)});
  write_file(t.src() / "index.json", R"({"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../etc"}]})");
  check_rejected(t, import_image(t.src().string(), t.store()), "digest");
  write_file(t.src() / "index.json", "{not json");
  check_rejected(t, import_image(t.src().string(), t.store()), "JSON");
  write_file(t.src() / "index.json", R"({"manifests":[]})");
  check_rejected(t, import_image(t.src().string(), t.store()), "no image manifest");
}

// ---- integrity on every import path -------------------------------------------------------

enum class Kind { OciDir, OciTar, DockerDir, DockerTar };
enum class Tamper { None, LayerContent, LayerBlob, Config, Swap, SizeShort, SizeLong, Count, Trailing };

const char* kind_name(Kind k) {
  static constexpr const char* kNames[] = {"OCI layout", "OCI layout tarball", "docker save directory", "docker save tarball"};
  return kNames[static_cast<int>(k)];
}

std::vector<TarEntry> first_entries() { return {{"a", 'd', "", 0755}, {"a/one", 'f', "1"}, {"a/keep", 'f', "k"}}; }
std::vector<TarEntry> second_entries() { return {{"a/two", 'f', "2"}, {"a/.wh.one", 'f', ""}}; }

// Writes a two-layer image of `kind` whose config lists the diff_ids of the untampered layers,
// with `tamper` applied; returns the path to import, or "" when the tamper does not apply to
// the kind (docker save states no blob digests or sizes).
std::string make_source(const TempDir& t, Kind kind, Compression c, Tamper tamper) {
  fs::remove_all(t.src());
  fs::create_directories(t.src());
  bool oci = kind == Kind::OciDir || kind == Kind::OciTar;
  if (!oci && (tamper == Tamper::LayerBlob || tamper == Tamper::SizeShort || tamper == Tamper::SizeLong)) return "";
  if (tamper == Tamper::Trailing && c != Compression::None) return "";
  std::vector<Layer> config_layers = {layer(first_entries(), c), layer(second_entries(), c)};
  std::vector<Layer> layers = config_layers;
  if (tamper == Tamper::LayerContent) layers[1].blob = make_tar({{"a/two", 'f', "evil"}}, c);
  if (tamper == Tamper::Swap) std::swap(layers[0], layers[1]);
  if (tamper == Tamper::Count) layers.pop_back();
  if (tamper == Tamper::Trailing) layers[1].blob += std::string(3000, 'T');  // after the tar's end
  std::string config = config_json(config_layers);
  std::string tampered_config = config;
  tampered_config.replace(tampered_config.find("GREETING=hi"), 11, "GREETING=yo");
  fs::path dir = t.src() / "image";
  if (oci) {
    write_file(dir / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
    std::string config_hex = add_blob(dir, config);
    if (tamper == Tamper::Config) write_file(dir / "blobs/sha256" / config_hex, tampered_config);
    std::string descs;
    for (size_t i = 0; i < layers.size(); ++i) {
      std::string hex = add_blob(dir, layers[i].blob);
      std::string d = descriptor(layers[i].media_type, layers[i].blob, hex);
      if (i == 1 && (tamper == Tamper::SizeShort || tamper == Tamper::SizeLong)) {
        size_t stated = layers[i].blob.size() + (tamper == Tamper::SizeLong ? 1 : 0) - (tamper == Tamper::SizeShort ? 1 : 0);
        d = R"({"mediaType":")" + layers[i].media_type + R"(","digest":"sha256:)" + hex + R"(","size":)" + std::to_string(stated) + "}";
      }
      if (i == 1 && tamper == Tamper::LayerBlob) write_file(dir / "blobs/sha256" / hex, layer({{"a/two", 'f', "evil"}}, c).blob);
      descs += (descs.empty() ? "" : ",") + d;
    }
    std::string manifest = R"({"schemaVersion":2,"config":)" +
                           descriptor("application/vnd.oci.image.config.v1+json", config, config_hex) + R"(,"layers":[)" + descs + "]}";
    write_file(dir / "index.json", R"({"schemaVersion":2,"manifests":[)" +
                                       descriptor("application/vnd.oci.image.manifest.v1+json", manifest, add_blob(dir, manifest)) + "]}");
  } else {
    std::string config_hex = sha256_hex(config);
    write_file(dir / (config_hex + ".json"), tamper == Tamper::Config ? tampered_config : config);
    std::string paths;
    for (size_t i = 0; i < layers.size(); ++i) {
      std::string p = "l" + std::to_string(i) + "/layer.tar";
      write_file(dir / p, layers[i].blob);
      paths += std::string(paths.empty() ? "" : ",") + "\"" + p + "\"";
    }
    write_file(dir / "manifest.json", R"([{"Config":")" + config_hex + R"(.json","Layers":[)" + paths + "]}]");
  }
  if (kind == Kind::OciTar || kind == Kind::DockerTar) {
    tar_directory(dir, t.src() / "image.tar");
    return (t.src() / "image.tar").string();
  }
  return dir.string();
}

TEST_CASE("every import path refuses tampered layers and configs and swapped layers, leaving nothing") {
  std::vector<Compression> compressions = {Compression::None, Compression::Gzip};
  if (zstd_writable()) compressions.push_back(Compression::Zstd);
  const std::pair<Tamper, const char*> tampers[] = {
      // A different blob under the same digest: its size or its sha256 gives it away.
      {Tamper::LayerContent, "rootfs.diff_ids"}, {Tamper::LayerBlob, "does not match its"},
      {Tamper::Config, "sha256 digest"},         {Tamper::Swap, "rootfs.diff_ids"},
      {Tamper::SizeShort, "size"},               {Tamper::SizeLong, "size"},
      {Tamper::Count, "layer count"},            {Tamper::Trailing, "rootfs.diff_ids"},
  };
  for (Kind kind : {Kind::OciDir, Kind::OciTar, Kind::DockerDir, Kind::DockerTar}) {
    for (Compression c : compressions) {
      TempDir t;
      INFO(kind_name(kind), ", compression ", static_cast<int>(c));
      std::string good = make_source(t, kind, c, Tamper::None);
      auto ok = import_image(good, t.store());
      REQUIRE_MESSAGE(ok.ok(), ok.error().message());
      CHECK(read_file(fs::path(ok->rootfs) / "a/two") == "2");
      CHECK_FALSE(fs::exists(fs::path(ok->rootfs) / "a/one"));
      CHECK(t.store_clean());
      for (const auto& [tamper, fragment] : tampers) {
        INFO("tamper ", static_cast<int>(tamper), " expects '", fragment, "'");
        fs::remove_all(t.store());
        std::string src = make_source(t, kind, c, tamper);
        if (src.empty()) continue;
        const char* expect = fragment;
        bool docker = kind == Kind::DockerDir || kind == Kind::DockerTar;
        if (docker && tamper == Tamper::Config) expect = "file name";
        check_rejected(t, import_image(src, t.store()), expect);
        CHECK(t.store_empty());
      }
    }
  }
}

// ---- the store: interrupted imports, reclaim, concurrency --------------------------------

// Counts the entries of the store that are neither its lock nor a complete image of `hex`.
int temporaries(const TempDir& t) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(t.store())) {
    std::string name = e.path().filename().string();
    if (name.front() == '.' && name != ".lock") ++n;
  }
  return n;
}

TEST_CASE("temporaries of dead importers are reclaimed; a live importer's are kept") {
  TempDir t;
  fs::path store = t.store();
  write_file(store / ".partial-0123456789ab-dead01/rootfs/etc/passwd", "x");
  write_file(store / ".incoming-dead02/blobs/sha256/aa", "x");
  write_file(store / ".stale-0123456789ab-1-0/rootfs/f", "x");
  write_file(store / ".partial-0123456789ab-live01/rootfs/f", "x");
  int live = open((store / ".partial-0123456789ab-live01").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(live >= 0);
  REQUIRE(flock(live, LOCK_EX | LOCK_NB) == 0);  // as a running import holds it
  write_oci(t.src(), {layer(base_entries(), Compression::Gzip), layer(upper_entries(), Compression::Gzip)});
  auto r = import_image(t.src().string(), t.store());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  check_rootfs(r->rootfs);
  CHECK_FALSE(fs::exists(store / ".partial-0123456789ab-dead01"));
  CHECK_FALSE(fs::exists(store / ".incoming-dead02"));
  CHECK_FALSE(fs::exists(store / ".stale-0123456789ab-1-0"));
  CHECK(fs::exists(store / ".partial-0123456789ab-live01/rootfs/f"));
  close(live);  // that importer dies
  auto again = import_image(t.src().string(), t.store());
  REQUIRE_MESSAGE(again.ok(), again.error().message());
  CHECK(again->reused);
  CHECK(t.store_clean());
}

TEST_CASE("an incomplete or outdated tree in the store is replaced, never reused") {
  TempDir t;
  std::string hex = write_oci(t.src(), {layer(base_entries(), Compression::Gzip), layer(upper_entries(), Compression::Gzip)});
  fs::path tree = fs::path(t.store()) / hex;
  SUBCASE("no marker") { write_file(tree / "rootfs/junk", "partial"); }
  SUBCASE("the marker of an older format (no diff_id check, no ownership)") {
    write_file(tree / "rootfs/junk", "old");
    write_file(tree / "complete", "");
  }
  SUBCASE("a file where the tree should be") { write_file(tree, "junk"); }
  auto r = import_image(t.src().string(), t.store());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK_FALSE(r->reused);
  check_rootfs(r->rootfs);
  CHECK_FALSE(fs::exists(fs::path(r->rootfs) / "junk"));
  CHECK(t.store_clean());
  auto again = import_image(t.src().string(), t.store());
  REQUIRE_MESSAGE(again.ok(), again.error().message());
  CHECK(again->reused);
}

TEST_CASE("a write failure in the middle of an unpack leaves nothing behind") {
  TempDir t;
  std::vector<TarEntry> entries = {{"small", 'f', "s"}, {"big", 'f', std::string(256 * 1024, 'b')}, {"after", 'f', "a"}};
  write_oci(t.src(), {layer(entries, Compression::Gzip)});
  // A file-size limit makes the write of `big` fail (EFBIG), as a full disk would (ENOSPC).
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    signal(SIGXFSZ, SIG_IGN);
    rlimit lim{64 * 1024, 64 * 1024};
    setrlimit(RLIMIT_FSIZE, &lim);
    auto r = import_image(t.src().string(), t.store());
    _exit(r.ok() ? 0 : r.error().code == EFBIG ? 3 : 4);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  CHECK(t.store_clean());
  CHECK(t.store_empty());
  auto r = import_image(t.src().string(), t.store());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  CHECK(fs::file_size(fs::path(r->rootfs) / "big") == 256 * 1024);
  CHECK(read_file(fs::path(r->rootfs) / "after") == "a");
}

TEST_CASE("an import killed mid-way is never reused; the next import reclaims it and unpacks again") {
  TempDir t;
  std::vector<TarEntry> entries;
  for (int i = 0; i < 3000; ++i) entries.push_back({"d" + std::to_string(i % 30) + "/f" + std::to_string(i), 'f', std::string(4096, 'a' + i % 26)});
  std::string hex = write_oci(t.src(), {layer(entries, Compression::Gzip)});
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    auto r = import_image(t.src().string(), t.store());
    _exit(r.ok() ? 0 : 1);
  }
  // Kill it once its temporary tree has files in it.
  bool caught = false;
  for (int i = 0; i < 5000 && !caught; ++i) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(t.store(), ec)) {
      if (e.path().filename().string().starts_with(".partial-") && fs::exists(e.path() / "rootfs/d0", ec)) caught = true;
    }
    if (!caught) usleep(1000);
  }
  kill(pid, SIGKILL);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  bool killed = WIFSIGNALED(status);
  if (!killed || !caught) MESSAGE("the import finished before it could be killed mid-way; checking the result only");
  if (killed && caught) {
    CHECK(temporaries(t) == 1);                              // the dead importer's tree is left
    CHECK_FALSE(fs::exists(fs::path(t.store()) / hex));      // and never appears as the image
  }
  auto r = import_image(t.src().string(), t.store());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  if (killed && caught) CHECK_FALSE(r->reused);
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(r->rootfs)) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 3000);
  CHECK(read_file(fs::path(r->rootfs) / "d29/f2999") == std::string(4096, 'a' + 2999 % 26));
  CHECK(temporaries(t) == 0);
}

TEST_CASE("concurrent imports of one image into one store (threads and processes) all get the same complete tree") {
  TempDir t;
  std::string hex = write_oci(t.src(), {layer(base_entries(), Compression::Gzip), layer(upper_entries(), Compression::Gzip)});
  std::vector<pid_t> children;
  for (int i = 0; i < 2; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      auto r = import_image(t.src().string(), t.store());
      _exit(r.ok() && r->digest == "sha256:" + hex ? 0 : 1);
    }
    children.push_back(pid);
  }
  std::vector<Result<ImageInfo>> results(4, Error{0, "not run"});
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = import_image(t.src().string(), t.store()); });
  }
  for (std::thread& th : threads) th.join();
  for (pid_t pid : children) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  }
  for (auto& r : results) {
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    CHECK(r->rootfs == t.store() + "/" + hex + "/rootfs");
  }
  check_rootfs(results[0]->rootfs);
  CHECK(t.store_clean());
  size_t images = 0;
  for (const auto& e : fs::directory_iterator(t.store())) images += e.path().filename() != ".lock" ? 1 : 0;
  CHECK(images == 1);
}

// ---- ownership ----------------------------------------------------------------------------

TEST_CASE("layer entries keep their uid/gid (as root); ids above 65535 are refused") {
  TempDir t;
  auto r = import_one(t, {{"home", 'd', "", 0755},
                          {"home/app", 'd', "", 0750, 1000, 1000},
                          {"home/app/.profile", 'f', "p", 0644, 1000, 1001},
                          {"home/app/link", 'l', ".profile", 0777, 1000, 1000},
                          {"home/app/hard", 'h', "home/app/.profile", 0644, 0, 0},
                          {"ro", 'd', "", 0555},
                          {"ro/f", 'f', "f", 0444},
                          {"nobody", 'f', "n", 0644, 65535, 65535}});
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  fs::path root = r->rootfs;
  struct stat st;
  if (geteuid() == 0) {
    REQUIRE(lstat((root / "home/app").c_str(), &st) == 0);
    CHECK(st.st_uid == 1000);
    CHECK(st.st_gid == 1000);
    CHECK((st.st_mode & 07777) == 0750);
    REQUIRE(lstat((root / "home/app/.profile").c_str(), &st) == 0);
    CHECK(st.st_uid == 1000);
    CHECK(st.st_gid == 1001);
    REQUIRE(lstat((root / "home/app/hard").c_str(), &st) == 0);
    CHECK(st.st_uid == 1000);  // a hardlink is its target's inode
    REQUIRE(lstat((root / "home/app/link").c_str(), &st) == 0);
    CHECK(S_ISLNK(st.st_mode));
    CHECK(st.st_uid == 1000);
    REQUIRE(lstat((root / "home").c_str(), &st) == 0);
    CHECK(st.st_uid == 0);
    REQUIRE(lstat((root / "ro").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0555);  // the image's mode, not forced writable
    REQUIRE(lstat((root / "nobody").c_str(), &st) == 0);
    CHECK(st.st_uid == 65535);
  } else {
    MESSAGE("not root: ownership is not applied, only the id range is checked");
    REQUIRE(lstat((root / "home/app/.profile").c_str(), &st) == 0);
    CHECK(st.st_uid == geteuid());
  }
  check_rejected(t, import_one(t, {{"home", 'd', "", 0755}, {"home/x", 'f', "x", 0644, 70000, 0}}), "above 65535");
  check_rejected(t, import_one(t, {{"g", 'd', "", 0755, 0, 65536}}), "above 65535");
  check_rejected(t, import_one(t, {{"s", 'l', "x", 0777, 100000, 100000}}), "above 65535");
}

}  // namespace
}  // namespace sp::image
