// Tests of container/ContainerSource with a real uv loop and real sandboxes over a busybox OCI
// image made by make_busybox_image.py: readiness, upstream connections, image config and
// overrides, writable-layer isolation and wipe, probes, container end, and hostile probes.
//
// usage: container_source_test SANDPOOL_INIT MAKE_IMAGE_PY TEST_NAME MAKE_TEST_IMAGES_PY
// Exit 77 (skip) when not root or cgroups are missing; 0 pass; 1 fail.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "container/container_source.h"
#include "container/spawner.h"
#include "sandbox/cgroup.h"
#include "util/log.h"

namespace fs = std::filesystem;
using sp::container::ContainerSource;
using sp::container::ContainerSourceOptions;
using sp::container::monotonic_ns;

namespace {

int g_failures = 0;
std::string g_init, g_make_image, g_store;
int g_image_seq = 0;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                                  \
    }                                                                                \
  } while (0)
#define REQUIRE(cond)                                                                  \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                                    \
      return;                                                                          \
    }                                                                                  \
  } while (0)

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// An OCI layout of the busybox image with `config_json` as its config; returns its path.
std::string make_image(const std::string& config_json, const std::string& symlinks_json = "{}") {
  std::string out = g_store + "-images/img" + std::to_string(++g_image_seq);
  fs::create_directories(out);
  std::string cmd = "/usr/bin/python3 " + g_make_image + " '" + out + "' '" + config_json + "' '" + symlinks_json + "'";
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "make image failed: %s\n", cmd.c_str());
    std::exit(1);
  }
  return out;
}

const char* kHttpdCmd = R"(["/bin/busybox","httpd","-f","-p","8080","-h","/www"])";

sp::pool::PoolSettings settings_for(const std::string& image) {
  sp::pool::PoolSettings s;
  s.name = "ctest";
  s.container_type = sp::pool::ContainerType::kCustomContainer;
  s.container.image = image;
  s.memory_bytes = 128ull << 20;
  s.data_size_bytes = 32ull << 20;
  s.cpu = 1.0;
  return s;
}

struct Harness {
  uv_loop_t loop{};
  std::unique_ptr<sp::pool::Offload> offload;
  std::unique_ptr<ContainerSource> src;
  int ready_events = 0;
  std::vector<std::pair<uint64_t, std::string>> ended;

  explicit Harness(const sp::pool::PoolSettings& s) {
    uv_loop_init(&loop);
    offload = std::make_unique<sp::pool::Offload>(&loop);
    ContainerSourceOptions o;
    o.image_store_dir = g_store;
    o.init_path = g_init;
    o.max_backoff_ms = 1000;
    src = std::make_unique<ContainerSource>(&loop, s, o);
    src->set_on_container_end([this](uint64_t id, const std::string& why) { ended.emplace_back(id, why); });
  }
  // prepare() on this thread: the loop is not running (PoolManager runs it on an Offload thread).
  sp::Status start() {
    SP_TRY(src->prepare());
    return src->start([this] { ++ready_events; });
  }
  bool run_until(const std::function<bool()>& pred, int timeout_ms) {
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, [](uv_timer_t*) {}, 5, 5);
    uint64_t deadline = monotonic_ns() + static_cast<uint64_t>(timeout_ms) * 1000000;
    while (!pred() && monotonic_ns() < deadline) uv_run(&loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
    return pred();
  }
  std::optional<sp::pool::Sandbox> pop_ready(int timeout_ms = 10000) {
    if (!run_until([&] { return src->ready_count() > 0; }, timeout_ms)) return std::nullopt;
    return src->pop();
  }
  void finish() {
    bool stopped = false;
    src->stop(*offload, [&] { stopped = true; });
    run_until([&] { return stopped; }, 10000);
    CHECK(stopped);
    src.reset();
    offload->close([] {});
    uv_run(&loop, UV_RUN_NOWAIT);
    offload.reset();
    CHECK(uv_loop_close(&loop) == 0);
  }
};

// Blocking HTTP/1.0 request over a connecting socket from open_upstream: the whole response.
std::string http_request(int fd, const std::string& method, const std::string& path, const std::string& body = "") {
  pollfd p{fd, POLLOUT, 0};
  if (poll(&p, 1, 5000) != 1) return "ERR: connect timeout";
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) return std::string("ERR: connect: ") + strerror(err);
  std::string req = method + " " + path + " HTTP/1.0\r\nHost: test\r\n";
  if (method != "GET") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return "ERR: send";
  std::string out;
  for (;;) {
    pollfd r{fd, POLLIN, 0};
    if (poll(&r, 1, 10000) != 1) return out + "ERR: read timeout";
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EAGAIN) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

std::string http_get(int fd, const std::string& path) { return http_request(fd, "GET", path); }

std::string url_encode(const std::string& s) {
  std::string out;
  char hex[4];
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// Runs `cmd` with /bin/sh inside the sandbox (the image's CGI) and returns the HTTP response.
std::string sh(Harness& h, const sp::pool::Sandbox& sb, const std::string& cmd) {
  auto fd = h.src->open_upstream(sb);
  if (!fd.ok()) return "ERR: open_upstream: " + fd.error().message();
  return http_get(fd->get(), "/cgi-bin/sh?" + url_encode(cmd));
}

// Nothing of the store is mounted any more and no layer directory is left.
void check_no_leftovers() {
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    if (contains(line, g_store)) {
      std::fprintf(stderr, "leftover mount: %s\n", line.c_str());
      ++g_failures;
    }
  }
  std::error_code ec;
  for (const auto& owner : fs::directory_iterator(g_store + "/run", ec)) {
    for (const auto& e : fs::directory_iterator(owner.path(), ec)) {
      std::fprintf(stderr, "leftover layer dir: %s\n", e.path().c_str());
      ++g_failures;
    }
  }
}

uint64_t reaped(Harness& h) { return h.src->stats().reaped; }

// ---------------------------------------------------------------------------------------------

void test_basic() {
  std::string img = make_image(std::string(R"({"Cmd":)") + kHttpdCmd + R"(,"ExposedPorts":{"8080/tcp":{}}})");
  Harness h(settings_for(img));
  auto st = h.start();
  REQUIRE(st.ok());
  CHECK(h.src->launch().port == 8080);
  CHECK(h.src->containers() != nullptr);
  CHECK(std::string(h.src->tier()) == "process");
  h.src->set_wanted(1);
  auto sb = h.pop_ready();
  REQUIRE(sb.has_value());
  std::printf("spawn-to-ready (busybox httpd): %.1f ms\n", h.src->last_spawn_to_ready_ns() / 1e6);
  auto fd = h.src->open_upstream(*sb);
  REQUIRE(fd.ok());
  std::string resp = http_get(fd->get(), "/index.html");
  CHECK(contains(resp, "200 OK"));
  CHECK(contains(resp, "hello from busybox"));
  // Cost of open_upstream (setns in, socket, setns back, connect start) vs a plain host socket.
  const int kIters = 2000;
  uint64_t t0 = monotonic_ns();
  for (int i = 0; i < kIters; ++i) {
    auto f = h.src->open_upstream(*sb);
    REQUIRE(f.ok());
  }
  uint64_t t1 = monotonic_ns();
  for (int i = 0; i < kIters; ++i) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(9);  // discard: refused at once, like the sandbox's connect is accepted at once
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    close(s);
  }
  uint64_t t2 = monotonic_ns();
  // The two setns calls alone.
  int ns = open(("/proc/" + std::to_string(sb->pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC);
  int host = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  REQUIRE(ns >= 0 && host >= 0);
  for (int i = 0; i < kIters; ++i) {
    REQUIRE(setns(ns, CLONE_NEWNET) == 0);
    REQUIRE(setns(host, CLONE_NEWNET) == 0);
  }
  uint64_t t3 = monotonic_ns();
  close(ns);
  close(host);
  std::printf("open_upstream: %.1f us per call; host socket+connect alone: %.1f us; setns in+out alone: %.1f us\n",
              (t1 - t0) / 1e3 / kIters, (t2 - t1) / 1e3 / kIters, (t3 - t2) / 1e3 / kIters);
  // The sandbox's init is the server's child; the sandbox's pid is reported.
  CHECK(sb->pid > 0);
  CHECK(sb->id > 0);
  h.src->release(std::move(*sb));
  CHECK(h.run_until([&] { return reaped(h) >= 1; }, 10000));
  // Spawn-to-ready of one sandbox at a time (the pool keeps one ready).
  std::vector<double> ms;
  {  // its spawn overlapped the blocking measurements above
    auto first = h.pop_ready();
    REQUIRE(first.has_value());
    h.src->release(std::move(*first));
  }
  for (int i = 0; i < 10; ++i) {
    auto next = h.pop_ready();
    REQUIRE(next.has_value());
    ms.push_back(h.src->last_spawn_to_ready_ns() / 1e6);
    h.src->release(std::move(*next));
  }
  std::sort(ms.begin(), ms.end());
  std::printf("spawn-to-ready over 10: min %.1f ms, median %.1f ms, max %.1f ms\n", ms.front(), ms[5], ms.back());
  h.src->set_wanted(0);
  CHECK(h.run_until([&] { return reaped(h) >= 12 && h.src->stats().pending == 0; }, 10000));
  h.finish();
  check_no_leftovers();
}

void test_config() {
  std::string conf = R"({"Entrypoint":["/bin/sh","-c"],)"
                     R"("Cmd":["echo img-cmd > /www/which; pwd > /www/pwd; exec /bin/busybox httpd -f -p 8080 -h /www"],)"
                     R"("Env":["FOO=image","BAR=image","PATH=/bin"],"WorkingDir":"/work/dir","User":"app",)"
                     R"("ExposedPorts":{"8080/tcp":{}}})";
  std::string img = make_image(conf);
  const std::string probe = "id; cat /www/pwd; echo FOO=$FOO BAR=$BAR HOME=$HOME; cat /www/which";
  {  // 1. the image's own config
    Harness h(settings_for(img));
    REQUIRE(h.start().ok());
    h.src->set_wanted(1);
    auto sb = h.pop_ready();
    REQUIRE(sb.has_value());
    std::string out = sh(h, *sb, probe);
    CHECK(contains(out, "uid=1234(app) gid=1234(app)"));
    CHECK(contains(out, "/work/dir\n"));
    CHECK(contains(out, "FOO=image BAR=image HOME=/home/app"));
    CHECK(contains(out, "img-cmd"));
    if (g_failures) std::fprintf(stderr, "%s\n", out.c_str());
    // The image's /home/app is owned by 1234 in its layer: the user can write its home (copy-up
    // into its own writable layer), as under Docker, but not root's directories.
    std::string own = sh(h, *sb, "ls -lnd /home/app /bin; echo mine > /home/app/f && cat /home/app/f && ls -ln /home/app/f; "
                                 "touch /bin/nope 2>/dev/null && echo BIN-WRITABLE || echo BIN-DENIED");
    CHECK(contains(own, " 1234     1234 ") || contains(own, " 1234 1234 "));
    CHECK(contains(own, "mine\n"));
    CHECK(contains(own, "BIN-DENIED"));
    CHECK(!contains(own, "BIN-WRITABLE"));
    if (g_failures) std::fprintf(stderr, "%s\n", own.c_str());
    // The shared image keeps the layer's owner on the host, where only root can reach it.
    struct stat hst {};
    CHECK(stat((h.src->image().rootfs + "/home/app").c_str(), &hst) == 0 && hst.st_uid == 1234);
    CHECK(!fs::exists(h.src->image().rootfs + "/home/app/f"));
    h.src->release(std::move(*sb));
    h.finish();
  }
  {  // 2. command replaces Entrypoint and drops Cmd; env overrides; targetPort given
    auto s = settings_for(img);
    s.container.command = std::vector<std::string>{"/bin/sh", "-c",
                                                   "echo pool-cmd > /www/which; pwd > /www/pwd; exec /bin/busybox httpd -f -p 8081 -h /www"};
    s.container.env = {{"FOO", "pool"}, {"NEW", "x"}};
    s.container.target_port = 8081;
    Harness h(s);
    REQUIRE(h.start().ok());
    h.src->set_wanted(1);
    auto sb = h.pop_ready();
    REQUIRE(sb.has_value());
    std::string out = sh(h, *sb, probe + "; echo NEW=$NEW");
    CHECK(contains(out, "FOO=pool BAR=image"));
    CHECK(contains(out, "NEW=x"));
    CHECK(contains(out, "pool-cmd"));
    h.src->release(std::move(*sb));
    h.finish();
  }
  {  // 3. args replace Cmd, the image's Entrypoint stays; numeric user:group
    auto s = settings_for(img);
    s.container.args = std::vector<std::string>{"echo pool-args > /www/which; pwd > /www/pwd; exec /bin/busybox httpd -f -p 8080 -h /www"};
    Harness h(s);
    REQUIRE(h.start().ok());
    h.src->set_wanted(1);
    auto sb = h.pop_ready();
    REQUIRE(sb.has_value());
    std::string out = sh(h, *sb, probe);
    CHECK(contains(out, "pool-args"));
    CHECK(!contains(out, "img-cmd"));
    h.src->release(std::move(*sb));
    h.finish();
  }
  {  // 4. command without args: the image Cmd is dropped (sh -c with no script → exits at once)
    std::string img2 = make_image(R"({"Cmd":["/bin/busybox","false"],"User":"0:50","ExposedPorts":{"8080/tcp":{}}})");
    auto s = settings_for(img2);
    s.container.command = std::vector<std::string>{"/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"};
    Harness h(s);
    REQUIRE(h.start().ok());
    CHECK(h.src->launch().argv.size() == 7);
    CHECK(h.src->launch().gid == 50);
    h.src->set_wanted(1);
    auto sb = h.pop_ready();
    REQUIRE(sb.has_value());
    std::string out = sh(h, *sb, "id");
    CHECK(contains(out, "uid=0(root) gid=50(staff)"));
    h.src->release(std::move(*sb));
    h.finish();
  }
  check_no_leftovers();
}

void test_isolation() {
  std::string img = make_image(std::string(R"({"Cmd":)") + kHttpdCmd + R"(,"ExposedPorts":{"8080/tcp":{}}})");
  Harness h(settings_for(img));
  REQUIRE(h.start().ok());
  h.src->set_wanted(2);
  REQUIRE(h.run_until([&] { return h.src->ready_count() == 2; }, 15000));
  auto a = h.src->pop();
  auto b = h.src->pop();
  REQUIRE(a && b);
  h.src->set_wanted(0);
  std::string wa = sh(h, *a, "echo secret > /www/a-file && echo x > /etc/a-etc && echo WROTE; ls -ln /etc/passwd");
  CHECK(contains(wa, "WROTE"));
  // The image's files are owned by the container's root (id-mapped), not by nobody.
  CHECK(contains(wa, " 0        0 ") || contains(wa, " 0 0 "));
  CHECK(contains(sh(h, *a, "cat /www/a-file /etc/a-etc"), "secret\nx"));
  std::string rb = sh(h, *b, "test -e /www/a-file && echo PRESENT || echo ABSENT; test -e /etc/a-etc && echo PRESENT || echo ABSENT");
  CHECK(contains(rb, "ABSENT\nABSENT"));
  CHECK(!contains(rb, "PRESENT"));
  // The shared image itself is untouched.
  CHECK(!fs::exists(h.src->image().rootfs + "/www/a-file"));
  // The writable layer is bounded by dataSizeBytes (32 MiB here).
  std::string full = sh(h, *a, "dd if=/dev/zero of=/www/big bs=1M count=64 2>&1; echo rc=$?");
  CHECK(contains(full, "No space left"));
  // A released sandbox's layer is gone: a new sandbox does not see it, nothing is left mounted.
  h.src->release(std::move(*a));
  h.src->release(std::move(*b));
  CHECK(h.run_until([&] { return reaped(h) >= 2; }, 10000));
  check_no_leftovers();
  h.src->set_wanted(1);
  auto c = h.pop_ready();
  REQUIRE(c.has_value());
  CHECK(contains(sh(h, *c, "test -e /www/a-file && echo PRESENT || echo ABSENT"), "ABSENT"));
  h.src->release(std::move(*c));
  h.src->set_wanted(0);
  h.finish();
  check_no_leftovers();
}

void test_startup_failure() {
  std::string img = make_image(std::string(R"({"Cmd":)") + kHttpdCmd + R"(,"ExposedPorts":{"8080/tcp":{}}})");
  {  // never listens
    auto s = settings_for(img);
    s.container.command = std::vector<std::string>{"/bin/busybox", "sleep", "1000"};
    sp::pool::ProbeSettings p;
    p.kind = sp::pool::ProbeSettings::Kind::kTcp;
    p.period_seconds = 1;
    p.failure_threshold = 1;
    s.container.startup = p;
    Harness h(s);
    REQUIRE(h.start().ok());
    h.src->set_wanted(1);
    CHECK(h.run_until([&] { return h.src->stats().spawn_failures >= 1; }, 10000));
    CHECK(h.src->ready_count() == 0);
    CHECK(h.ready_events == 0);
    CHECK(contains(h.src->stats().last_error, "startup probe failed"));
    CHECK(contains(h.src->stats().last_error, "Connection refused"));
    h.src->set_wanted(0);
    h.finish();
  }
  {  // HTTP probe on a path that answers 404
    auto s = settings_for(img);
    sp::pool::ProbeSettings p;
    p.kind = sp::pool::ProbeSettings::Kind::kHttp;
    p.path = "/missing";
    p.period_seconds = 1;
    p.failure_threshold = 1;
    s.container.startup = p;
    Harness h(s);
    REQUIRE(h.start().ok());
    h.src->set_wanted(1);
    CHECK(h.run_until([&] { return h.src->stats().spawn_failures >= 1; }, 10000));
    CHECK(h.src->ready_count() == 0);
    CHECK(contains(h.src->stats().last_error, "HTTP status 404"));
    h.src->set_wanted(0);
    h.finish();
  }
  {  // exits at once: counted, and retried with a backoff (not hundreds of times)
    auto s = settings_for(img);
    s.container.command = std::vector<std::string>{"/bin/busybox", "false"};
    Harness h(s);
    REQUIRE(h.start().ok());
    h.src->set_wanted(2);
    h.run_until([] { return false; }, 2500);
    auto st = h.src->stats();
    CHECK(st.spawn_failures >= 2);
    CHECK(st.spawn_failures <= 12);
    CHECK(h.src->ready_count() == 0);
    CHECK(contains(st.last_error, "container exited with status 1 before its startup probe passed"));
    std::printf("failures in 2.5 s with a command that exits: %llu\n", static_cast<unsigned long long>(st.spawn_failures));
    h.src->set_wanted(0);
    h.finish();
  }
  check_no_leftovers();
}

void test_exit() {
  std::string img = make_image(std::string(R"({"Cmd":)") + kHttpdCmd + R"(,"ExposedPorts":{"8080/tcp":{}}})");
  {
    auto s = settings_for(img);
    s.container.command = std::vector<std::string>{
        "/bin/sh", "-c",
        "/bin/busybox httpd -f -p 8080 -h /www & while [ ! -e /tmp/exit ]; do /bin/busybox sleep 0.05; done; exit 3"};
    Harness h(s);
    REQUIRE(h.start().ok());
    h.src->set_wanted(1);
    auto sb = h.pop_ready();
    REQUIRE(sb.has_value());
    h.src->set_wanted(0);
    CHECK(h.ended.empty());
    sh(h, *sb, "touch /tmp/exit");
    CHECK(h.run_until([&] { return !h.ended.empty(); }, 5000));
    REQUIRE(!h.ended.empty());
    CHECK(h.ended[0].first == sb->id);
    CHECK(h.ended[0].second == "container exited with status 3");
    CHECK(!h.src->open_upstream(*sb).ok());
    h.src->release(std::move(*sb));
    h.finish();
  }
  {  // out of memory
    auto s = settings_for(img);
    s.memory_bytes = 48ull << 20;
    s.container.command = std::vector<std::string>{
        "/bin/sh", "-c",
        "/bin/busybox httpd -f -p 8080 -h /www & while [ ! -e /tmp/oom ]; do /bin/busybox sleep 0.05; done; "
        "exec /bin/busybox dd if=/dev/zero of=/dev/null bs=200M count=1"};
    Harness h(s);
    REQUIRE(h.start().ok());
    h.src->set_wanted(1);
    auto sb = h.pop_ready();
    REQUIRE(sb.has_value());
    h.src->set_wanted(0);
    sh(h, *sb, "touch /tmp/oom");
    CHECK(h.run_until([&] { return !h.ended.empty(); }, 10000));
    REQUIRE(!h.ended.empty());
    CHECK(h.ended[0].second == "killed: out of memory");
    h.src->release(std::move(*sb));
    h.finish();
  }
  check_no_leftovers();
}

void test_liveness() {
  std::string img = make_image(std::string(R"({"Cmd":)") + kHttpdCmd + R"(,"ExposedPorts":{"8080/tcp":{}}})");
  auto s = settings_for(img);
  sp::pool::ProbeSettings p;
  p.kind = sp::pool::ProbeSettings::Kind::kHttp;
  p.path = "/healthz";
  p.period_seconds = 1;
  p.failure_threshold = 1;
  s.container.liveness = p;
  Harness h(s);
  REQUIRE(h.start().ok());
  h.src->set_wanted(1);
  auto a = h.pop_ready();
  REQUIRE(a.has_value());
  CHECK(h.run_until([&] { return h.src->ready_count() == 1; }, 10000));  // refilled
  // The allocated one turns unhealthy: its session is told.
  sh(h, *a, "rm -f /www/healthz");
  CHECK(h.run_until([&] { return !h.ended.empty(); }, 5000));
  REQUIRE(!h.ended.empty());
  CHECK(h.ended[0].first == a->id);
  CHECK(contains(h.ended[0].second, "liveness probe failed"));
  CHECK(contains(h.ended[0].second, "404"));
  h.src->release(std::move(*a));
  h.src->set_wanted(0);
  h.finish();

  // A ready sandbox that breaks by itself (its command removes /www/healthz after 1 s).
  auto s2 = s;
  s2.container.command = std::vector<std::string>{
      "/bin/sh", "-c", "(/bin/busybox sleep 1; rm -f /www/healthz) & exec /bin/busybox httpd -f -p 8080 -h /www"};
  Harness h2(s2);
  REQUIRE(h2.start().ok());
  h2.src->set_wanted(1);
  CHECK(h2.run_until([&] { return h2.src->stats().spawned >= 2; }, 10000));
  CHECK(contains(h2.src->stats().last_error, "replaced"));
  CHECK(h2.ended.empty());
  h2.src->set_wanted(0);
  h2.finish();
  check_no_leftovers();
}

void test_bad_image() {
  {
    Harness h(settings_for("/nonexistent/image/path"));
    auto st = h.start();
    CHECK(!st.ok());
    CHECK(!h.src->stats().last_error.empty());
    std::printf("bad path: %s\n", h.src->stats().last_error.c_str());
    h.finish();
  }
  {
    std::string img = make_image(R"({"ExposedPorts":{"8080/tcp":{}}})");
    Harness h(settings_for(img));
    auto st = h.start();
    CHECK(!st.ok());
    CHECK(contains(h.src->stats().last_error, "no Entrypoint or Cmd"));
    h.finish();
  }
  {
    std::string img = make_image(R"({"Cmd":["/bin/true"]})");
    Harness h(settings_for(img));
    CHECK(!h.start().ok());
    CHECK(contains(h.src->stats().last_error, "targetPort"));
    h.finish();
  }
  {
    std::string img = make_image(R"({"Cmd":["/bin/true"],"User":"nosuchuser","ExposedPorts":{"8080/tcp":{}}})");
    Harness h(settings_for(img));
    CHECK(!h.start().ok());
    CHECK(contains(h.src->stats().last_error, "User not found"));
    h.finish();
  }
  // Hostile images: mount points that are symlinks out of the rootfs are refused; a User looked
  // up through a symlinked /etc/passwd is resolved inside the rootfs, never on the host.
  for (const char* links : {R"({"proc":"/"})", R"({"dev":"/etc"})", R"({"work":"/etc"})", R"({"etc":"/www"})"}) {
    std::string img = make_image(R"({"Cmd":["/bin/true"],"WorkingDir":"/work/x","ExposedPorts":{"8080/tcp":{}}})", links);
    Harness h(settings_for(img));
    CHECK(!h.start().ok());
    CHECK(contains(h.src->stats().last_error, "not a directory"));
    h.finish();
  }
  {  // the importer itself refuses links that climb out
    std::string img = make_image(R"({"Cmd":["/bin/true"],"ExposedPorts":{"8080/tcp":{}}})", R"({"dev":"../../../../etc"})");
    Harness h(settings_for(img));
    CHECK(!h.start().ok());
    h.finish();
  }
  {
    std::string img = make_image(R"({"Cmd":["/bin/true"],"User":"daemon","ExposedPorts":{"8080/tcp":{}}})",
                                 R"({"etc/passwd":"/etc/passwd","etc/group":"/etc/group"})");
    Harness h(settings_for(img));
    CHECK(!h.start().ok());  // the host has `daemon`; the image (its passwd a dangling link) has not
    CHECK(contains(h.src->stats().last_error, "User not found"));
    h.finish();
  }
  {  // a directory that is not an image
    std::string dir = g_store + "-images/notanimage";
    fs::create_directories(dir);
    std::ofstream(dir + "/index.json") << "{";
    Harness h(settings_for(dir));
    CHECK(!h.start().ok());
    h.finish();
  }
}

void test_hostile() {
  std::string img = make_image(std::string(R"({"Cmd":)") + kHttpdCmd + R"(,"ExposedPorts":{"8080/tcp":{}}})");
  // A listener on the host's loopback, and a host file.
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && listen(l, 8) == 0);
  socklen_t alen = sizeof a;
  getsockname(l, reinterpret_cast<sockaddr*>(&a), &alen);
  int port = ntohs(a.sin_port);
  std::string marker = g_store + "-host-secret";
  std::ofstream(marker) << "HOSTSECRET";
  chmod(marker.c_str(), 0644);

  Harness h(settings_for(img));
  REQUIRE(h.start().ok());
  h.src->set_wanted(1);
  auto sb = h.pop_ready();
  REQUIRE(sb.has_value());
  h.src->set_wanted(0);
  std::string out = sh(h, *sb, "/bin/busybox nc -w 1 127.0.0.1 " + std::to_string(port) + " </dev/null; echo nc-rc=$?");
  CHECK(contains(out, "nc-rc=1"));
  int c = accept(l, nullptr, nullptr);
  CHECK(c < 0);  // nothing reached the host listener
  if (c >= 0) close(c);
  out = sh(h, *sb, "/bin/busybox wget -T 1 -q -O - http://10.0.2.2/ 2>&1; echo wget-rc=$?; /bin/busybox ip addr 2>&1");
  CHECK(contains(out, "wget-rc=1"));
  CHECK(!contains(out, "eth0"));
  out = sh(h, *sb, "cat " + marker + " 2>&1; ls / ; ls /work 2>&1; cat /proc/1/cmdline; echo; id");
  CHECK(!contains(out, "HOSTSECRET"));
  CHECK(contains(out, "No such file"));
  CHECK(contains(out, "sandpool-init"));  // pid 1 is our init, not the host's
  // Root in the container holds no capability: no mount, no chroot escape, no raw sockets.
  out = sh(h, *sb, "mount -t tmpfs x /tmp 2>&1; echo mount-rc=$?; /bin/busybox ping -c1 127.0.0.1 2>&1; echo ping-rc=$?");
  CHECK(contains(out, "mount-rc=1") || contains(out, "mount-rc=255"));
  CHECK(!contains(out, "ping-rc=0"));
  h.src->release(std::move(*sb));
  h.finish();
  close(l);
  unlink(marker.c_str());
  check_no_leftovers();
}

// Two pools of one server share the image store (and its run directory): their sandboxes must
// not collide (layer dirs, cgroups, uid ranges).
void test_two_pools() {
  std::string img = make_image(std::string(R"({"Cmd":)") + kHttpdCmd + R"(,"ExposedPorts":{"8080/tcp":{}}})");
  auto s1 = settings_for(img), s2 = settings_for(img);
  s1.name = "one";
  s2.name = "two";
  Harness h1(s1), h2(s2);
  REQUIRE(h1.start().ok());
  REQUIRE(h2.start().ok());
  h1.src->set_wanted(3);
  h2.src->set_wanted(3);
  for (int i = 0; i < 400 && (h1.src->ready_count() < 3 || h2.src->ready_count() < 3); ++i) {
    h1.run_until([] { return false; }, 10);
    h2.run_until([] { return false; }, 10);
  }
  CHECK(h1.src->ready_count() == 3);
  CHECK(h2.src->ready_count() == 3);
  CHECK(h1.src->stats().spawn_failures == 0);
  CHECK(h2.src->stats().spawn_failures == 0);
  if (h1.src->stats().spawn_failures || h2.src->stats().spawn_failures)
    std::fprintf(stderr, "%s / %s\n", h1.src->stats().last_error.c_str(), h2.src->stats().last_error.c_str());
  auto a = h1.src->pop();
  auto b = h2.src->pop();
  REQUIRE(a && b);
  CHECK(contains(sh(h1, *a, "echo one > /www/mine; cat /www/mine"), "one"));
  CHECK(contains(sh(h2, *b, "test -e /www/mine && echo PRESENT || echo ABSENT"), "ABSENT"));
  h1.src->release(std::move(*a));
  h2.src->release(std::move(*b));
  h1.src->set_wanted(0);
  h2.src->set_wanted(0);
  h1.finish();
  h2.finish();
  check_no_leftovers();
}

std::string g_tool;  // tools/make-test-images.py

std::string call(Harness& h, const sp::pool::Sandbox& sb, const std::string& method, const std::string& path,
                 const std::string& body = "") {
  auto fd = h.src->open_upstream(sb);
  if (!fd.ok()) return "ERR: open_upstream: " + fd.error().message();
  return http_request(fd->get(), method, path, body);
}

// The shared test images (tools/make-test-images.py): pyapp (host Python + app.py) as an OCI
// layout and as a docker-save tarball, busybox-httpd as an OCI tarball.
void test_images() {
  std::string out = g_store + "-images/built";
  fs::create_directories(g_store + "-images");
  std::string cmd = "/usr/bin/python3 " + g_tool + " '" + out + "' >/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  {
    Harness h(settings_for(out + "/pyapp"));
    REQUIRE(h.start().ok());
    CHECK(h.src->launch().port == 8080);
    CHECK(h.src->launch().workdir == "/app");
    h.src->set_wanted(1);
    std::vector<double> ms;
    for (int i = 0; i < 6; ++i) {
      auto sb = h.pop_ready(20000);
      REQUIRE(sb.has_value());
      if (i > 0) ms.push_back(h.src->last_spawn_to_ready_ns() / 1e6);  // the first: cold page cache
      CHECK(contains(call(h, *sb, "GET", "/healthz"), "200 OK"));
      h.src->release(std::move(*sb));
    }
    std::sort(ms.begin(), ms.end());
    std::printf("pyapp spawn-to-ready over 5: min %.1f ms, median %.1f ms, max %.1f ms\n", ms.front(), ms[2], ms.back());
    h.src->set_wanted(2);
    REQUIRE(h.run_until([&] { return h.src->ready_count() == 2; }, 20000));
    auto a = h.src->pop();
    auto b = h.src->pop();
    REQUIRE(a && b);
    h.src->set_wanted(0);
    std::string who = call(h, *a, "GET", "/whoami");
    CHECK(contains(who, "\"uid\": 0"));
    CHECK(contains(who, "\"cwd\": \"/app\""));
    CHECK(contains(call(h, *a, "GET", "/env"), "\"PORT\": \"8080\""));
    CHECK(contains(call(h, *a, "PUT", "/file/x", "from-a"), "201"));
    CHECK(contains(call(h, *a, "GET", "/file/x"), "from-a"));
    CHECK(contains(call(h, *b, "GET", "/file/x"), "404"));
    CHECK(contains(call(h, *a, "GET", "/exit?code=3"), "bye"));
    CHECK(h.run_until([&] { return !h.ended.empty(); }, 5000));
    REQUIRE(!h.ended.empty());
    CHECK(h.ended[0].first == a->id);
    CHECK(h.ended[0].second == "container exited with status 3");
    h.src->release(std::move(*a));
    h.src->release(std::move(*b));
    h.finish();
  }
  for (const char* image : {"busybox-httpd.oci.tar", "pyapp-docker.tar"}) {
    Harness h(settings_for(out + "/" + image));
    auto st = h.start();
    REQUIRE(st.ok());
    h.src->set_wanted(1);
    auto sb = h.pop_ready(20000);
    REQUIRE(sb.has_value());
    h.src->set_wanted(0);
    std::string r = call(h, *sb, "GET", std::string(image).rfind("busybox", 0) == 0 ? "/" : "/healthz");
    CHECK(contains(r, "200 OK"));
    h.src->release(std::move(*sb));
    h.finish();
  }
  check_no_leftovers();
}

// A server that dies (SIGKILL) takes its sandboxes with it; the next start reclaims what a dead
// run left: its cgroups, and layer directories with mounts still on them.
void test_crash() {
  std::string img = make_image(std::string(R"({"Cmd":)") + kHttpdCmd + R"(,"ExposedPorts":{"8080/tcp":{}}})");
  int up[2], hold[2];
  REQUIRE(pipe(up) == 0 && pipe(hold) == 0);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // the "server"
    close(up[0]);
    close(hold[1]);
    Harness h(settings_for(img));
    if (!h.start().ok()) _exit(3);
    h.src->set_wanted(2);
    if (!h.run_until([&] { return h.src->ready_count() == 2; }, 15000)) _exit(4);
    auto a = h.src->pop();
    pid_t pids[2] = {a->pid, h.src->pop()->pid};
    if (write(up[1], pids, sizeof pids) != sizeof pids) _exit(5);
    char c;
    (void)!read(hold[0], &c, 1);  // killed while waiting here
    _exit(6);
  }
  close(up[1]);
  close(hold[0]);
  pid_t pids[2] = {0, 0};
  REQUIRE(read(up[0], pids, sizeof pids) == sizeof pids);
  std::string tag = sp::owner_tag(child);
  REQUIRE(!tag.empty());
  std::string cg = "/sys/fs/cgroup/memory/sandpool/" + tag;
  bool had_cgroups = fs::exists(cg);
  kill(child, SIGKILL);
  int st;
  waitpid(child, &st, 0);
  close(up[0]);
  close(hold[1]);
  // Its sandboxes die with it (PR_SET_PDEATHSIG on the spawner thread).
  auto gone = [](pid_t p) {
    std::ifstream f("/proc/" + std::to_string(p) + "/status");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("State:", 0) == 0) return line.find('Z') != std::string::npos;
    return true;
  };
  uint64_t deadline = monotonic_ns() + 3000000000ull;
  while (!(gone(pids[0]) && gone(pids[1])) && monotonic_ns() < deadline) usleep(10000);
  CHECK(gone(pids[0]));
  CHECK(gone(pids[1]));
  // A dead run's layer dir with a mount still on it.
  std::string dead = g_store + "/run/o1999999_1/7/layer";
  fs::create_directories(dead);
  REQUIRE(mount("tmpfs", dead.c_str(), "tmpfs", 0, "size=1m") == 0);
  Harness h(settings_for(img));
  REQUIRE(h.start().ok());
  CHECK(!fs::exists(g_store + "/run/o1999999_1"));
  CHECK(!fs::exists(g_store + "/run/" + tag));
  if (had_cgroups) CHECK(!fs::exists(cg));
  h.finish();
  check_no_leftovers();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s SANDPOOL_INIT MAKE_IMAGE_PY TEST MAKE_TEST_IMAGES_PY\n", argv[0]);
    return 2;
  }
  g_tool = argv[4];
  signal(SIGPIPE, SIG_IGN);  // as the server does (Spawner's contract)
  g_init = argv[1];
  g_make_image = argv[2];
  std::string name = argv[3];
  if (getenv("SANDPOOL_TEST_DEBUG")) sp::set_log_level(sp::LogLevel::kDebug);
  if (geteuid() != 0) {
    std::printf("SKIP: custom containers need root (id-mapped mounts)\n");
    return 77;
  }
  if (access("/proc/self/ns/user", F_OK) != 0 || !sp::CgroupManager::open().ok()) {
    std::printf("SKIP: user namespaces or cgroups are missing\n");
    return 77;
  }
  if (access(g_init.c_str(), X_OK) != 0) {
    std::printf("SKIP: no static sandpool-init (sanitizer build)\n");
    return 77;
  }
  g_store = "/var/tmp/sandpool-ctest-" + std::to_string(getpid());
  fs::create_directories(g_store);
  chmod(g_store.c_str(), 0711);
  std::map<std::string, void (*)()> tests = {
      {"basic", test_basic},       {"config", test_config},   {"isolation", test_isolation},
      {"startup-failure", test_startup_failure}, {"exit", test_exit}, {"liveness", test_liveness},
      {"bad-image", test_bad_image}, {"hostile", test_hostile}, {"crash", test_crash},
      {"images", test_images},     {"two-pools", test_two_pools},
  };
  for (const auto& [n, fn] : tests) {
    if (name != "all" && name != n) continue;
    std::printf("== %s\n", n.c_str());
    std::fflush(stdout);
    fn();
  }
  std::error_code ec;
  fs::remove_all(g_store, ec);
  fs::remove_all(g_store + "-images", ec);
  std::printf("%s\n", g_failures ? "FAIL" : "PASS");
  return g_failures ? 1 : 0;
}
