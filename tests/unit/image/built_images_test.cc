// import_image on the images tools/make-test-images.py builds. Runs only when
// SANDPOOL_TEST_IMAGES names their output directory (tests/image/images_test.py sets it);
// otherwise the case passes without checking anything and says so.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "image/oci_import.h"

namespace sp::image {
namespace {

namespace fs = std::filesystem;

struct Store {
  fs::path dir;
  Store() {
    std::string tmpl = "/tmp/sp-built-images-XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
  }
  ~Store() { fs::remove_all(dir); }
};

ImageInfo import_ok(const fs::path& source, const Store& store) {
  INFO("source: ", source.string());
  auto r = import_image(source.string(), (store.dir / source.filename()).string());
  REQUIRE_MESSAGE(r.ok(), r.error().message());
  return *r;
}

void check_pyapp(const ImageInfo& info) {
  CHECK(info.entrypoint == std::vector<std::string>{"/usr/bin/python3", "/app/app.py"});
  CHECK(info.env == std::vector<std::string>{"PORT=8080", "PYTHONDONTWRITEBYTECODE=1", "PATH=/usr/bin:/bin"});
  CHECK(info.working_dir == "/app");
  CHECK(info.user.empty());
  CHECK(info.exposed_ports == std::vector<std::string>{"8080/tcp"});
  fs::path root = info.rootfs;
  CHECK(fs::is_symlink(root / "usr/bin/python3"));
  CHECK(fs::is_regular_file(root / "usr/bin/python3.11"));
  CHECK(fs::is_regular_file(root / "usr/lib/python3.11/http/server.py"));
  CHECK(fs::is_directory(root / "usr/lib/python3.11/lib-dynload"));
  CHECK(!fs::exists(root / "usr/lib/python3.11/test"));
  CHECK(fs::is_regular_file(root / "app/app.py"));
}

TEST_CASE("built test images: import_image accepts them") {
  const char* dir = getenv("SANDPOOL_TEST_IMAGES");
  if (dir == nullptr || *dir == '\0') {
    MESSAGE("SANDPOOL_TEST_IMAGES is unset: nothing checked (tests/image/images_test.py sets it)");
    return;
  }
  fs::path images = dir;
  Store store;

  for (const char* name : {"busybox-httpd", "busybox-httpd.oci.tar"}) {
    ImageInfo info = import_ok(images / name, store);
    CHECK(info.entrypoint ==
          std::vector<std::string>{"/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"});
    CHECK(info.env == std::vector<std::string>{"PATH=/bin"});
    CHECK(info.working_dir == "/www");
    CHECK(info.exposed_ports == std::vector<std::string>{"8080/tcp"});
    fs::path root = info.rootfs;
    CHECK(fs::is_regular_file(root / "bin/busybox"));
    CHECK(fs::read_symlink(root / "bin/sh") == "busybox");
    CHECK(fs::is_regular_file(root / "www/index.html"));
    CHECK(fs::is_regular_file(root / "www/cgi-bin/echo"));
    CHECK(!fs::exists(root / "www/old.html"));          // whiteout in layer 2
    CHECK(!fs::exists(root / "www/.wh.old.html"));
    CHECK(!fs::exists(root / "www/stale/gone.txt"));    // opaque directory in layer 2
    CHECK(!fs::exists(root / "www/stale/.wh..wh..opq"));
    CHECK(fs::is_regular_file(root / "www/stale/new.txt"));
  }

  ImageInfo layout = import_ok(images / "pyapp", store);
  check_pyapp(layout);
  ImageInfo docker = import_ok(images / "pyapp-docker.tar", store);
  check_pyapp(docker);
  CHECK(docker.digest == layout.digest);  // same config JSON in both forms
  if (fs::exists(images / "pyapp-zstd")) {
    ImageInfo zstd = import_ok(images / "pyapp-zstd", store);
    check_pyapp(zstd);
    CHECK(!zstd.reused);  // a store of its own, so its zstd layers were really unpacked
  } else {
    MESSAGE("pyapp-zstd was not built (no zstd CLI): zstd layers not checked");
  }
}

}  // namespace
}  // namespace sp::image
