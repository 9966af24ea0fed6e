// Tests for container/launch.h: image config + pool overrides (Docker/Kubernetes semantics), user
// resolution in the image's own files, rootfs checks; over small rootfs trees made here.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "container/launch.h"

namespace sp::container {
namespace {

namespace fs = std::filesystem;

struct Rootfs {
  std::string dir;
  Rootfs() {
    char tmpl[] = "/tmp/launch_test_XXXXXX";
    dir = mkdtemp(tmpl);
    fs::create_directories(dir + "/etc");
    std::ofstream(dir + "/etc/passwd") << "root:x:0:0:root:/root:/bin/sh\nweb:x:33:44:web:/srv/web:/bin/sh\n";
    std::ofstream(dir + "/etc/group") << "root:x:0:\nwww:x:44:\nops:x:70:\n";
  }
  ~Rootfs() { fs::remove_all(dir); }
  image::ImageInfo image() const {
    image::ImageInfo i;
    i.rootfs = dir;
    i.entrypoint = {"/entry"};
    i.cmd = {"--flag", "x"};
    i.env = {"PATH=/opt/bin", "A=image", "B=image"};
    i.exposed_ports = {"53/udp", "8080/tcp"};
    return i;
  }
};

bool has(const std::vector<std::string>& v, const std::string& s) {
  for (const auto& e : v)
    if (e == s) return true;
  return false;
}

TEST_CASE("the image's own config") {
  Rootfs r;
  auto l = resolve_launch(r.image(), pool::ContainerSettings{});
  REQUIRE(l.ok());
  CHECK(l->argv == std::vector<std::string>{"/entry", "--flag", "x"});
  CHECK(l->port == 8080);  // the first TCP port; UDP is skipped
  CHECK(l->workdir == "/");
  CHECK(l->uid == 0);
  CHECK(l->gid == 0);
  CHECK(has(l->env, "PATH=/opt/bin"));
  CHECK(has(l->env, "HOME=/root"));
  CHECK(l->has_etc);
  CHECK_FALSE(l->has_etc_hosts);
}

TEST_CASE("command replaces Entrypoint and drops Cmd; args replace Cmd; env overrides") {
  Rootfs r;
  pool::ContainerSettings s;
  s.command = std::vector<std::string>{"/bin/other"};
  s.env = {{"A", "pool"}, {"C", "pool"}};
  s.target_port = 9000;
  auto l = resolve_launch(r.image(), s);
  REQUIRE(l.ok());
  CHECK(l->argv == std::vector<std::string>{"/bin/other"});
  CHECK(l->port == 9000);
  CHECK(has(l->env, "A=pool"));
  CHECK(has(l->env, "B=image"));
  CHECK(has(l->env, "C=pool"));
  CHECK_FALSE(has(l->env, "A=image"));
  s.args = std::vector<std::string>{"a1"};
  CHECK(resolve_launch(r.image(), s)->argv == std::vector<std::string>{"/bin/other", "a1"});
  pool::ContainerSettings only_args;
  only_args.args = std::vector<std::string>{};
  CHECK(resolve_launch(r.image(), only_args)->argv == std::vector<std::string>{"/entry"});
}

TEST_CASE("User: names from the image, numbers as given") {
  Rootfs r;
  auto img = r.image();
  img.user = "web";
  auto l = resolve_launch(img, {});
  REQUIRE(l.ok());
  CHECK(l->uid == 33);
  CHECK(l->gid == 44);
  CHECK(has(l->env, "HOME=/srv/web"));
  img.user = "web:ops";
  CHECK(resolve_launch(img, {})->gid == 70);
  img.user = "33:0";
  CHECK(resolve_launch(img, {})->gid == 0);
  img.user = "4321";  // no entry: gid 0, HOME /
  l = resolve_launch(img, {});
  REQUIRE(l.ok());
  CHECK(l->uid == 4321);
  CHECK(l->gid == 0);
  CHECK(has(l->env, "HOME=/"));
  for (const char* bad : {"nobody", "web:nogroup", "70000", "1:2:3"}) {
    img.user = bad;
    CHECK_FALSE(resolve_launch(img, {}).ok());
  }
}

TEST_CASE("errors: no command, no port, relative or symlinked working dir") {
  Rootfs r;
  auto img = r.image();
  img.entrypoint.clear();
  img.cmd.clear();
  CHECK_FALSE(resolve_launch(img, {}).ok());
  img = r.image();
  img.exposed_ports.clear();
  CHECK_FALSE(resolve_launch(img, {}).ok());
  img = r.image();
  img.working_dir = "rel";
  CHECK_FALSE(resolve_launch(img, {}).ok());
  fs::create_symlink("/etc", r.dir + "/wd");
  img.working_dir = "/wd/sub";
  CHECK_FALSE(resolve_launch(img, {}).ok());
  img.working_dir = "/new/dir";  // absent: created at spawn
  CHECK(resolve_launch(img, {}).ok());
}

TEST_CASE("read_in_root never leaves the rootfs") {
  Rootfs r;
  fs::create_symlink("/etc/hostname", r.dir + "/etc/h");  // absolute: inside the rootfs
  fs::create_symlink("../../../../../etc/hostname", r.dir + "/etc/up");
  CHECK_FALSE(read_in_root(r.dir, "/etc/h").ok());
  CHECK_FALSE(read_in_root(r.dir, "/etc/up").ok());
  std::ofstream(r.dir + "/etc/hostname") << "inside\n";
  CHECK(read_in_root(r.dir, "/etc/h").value() == "inside\n");
  CHECK(read_in_root(r.dir, "/etc/up").value() == "inside\n");
}

}  // namespace
}  // namespace sp::container
