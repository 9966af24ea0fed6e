// Tests for image/oci_import.h and image/unpack.h: images are built here with libarchive's
// write API (OCI layouts, their tarballs, docker-save tarballs), good and hostile.
#include <archive.h>
#include <archive_entry.h>
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>
#include <fstream>
#include <string>
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
  // Nothing but complete images (no temporary trees) in the store.
  bool store_clean() const {
    if (!fs::exists(store())) return true;
    for (const auto& e : fs::directory_iterator(store())) {
      if (e.path().filename().string().front() == '.') return false;
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
  CHECK(fs::is_empty(t.store()));
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

}  // namespace
}  // namespace sp::image
