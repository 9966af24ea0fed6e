// `sandpool serve`: start-up, signal handling and the ordered shutdown that ends with uv_loop_close() == 0.
#include "server.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <simdjson.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "api/errors.h"
#include "api/file_routes.h"
#include "api/openapi.h"
#include "api/pool_routes.h"
#include "api/proxy_routes.h"
#include "api/session_routes.h"
#include "cli.h"
#include "container/container_source.h"
#include "pool/metadata.h"
#include "pool/microvm_source.h"
#include "pool/process_source.h"
#include "util/event_loop.h"
#include "util/log.h"
#include "vmm/pool_template.h"

namespace sp {
namespace {

http::HttpLimits http_limits(const ServerConfig& c) {
  http::HttpLimits l;
  l.max_connections = c.max_connections;
  l.header_timeout_ms = c.header_timeout_ms;
  l.idle_timeout_ms = c.idle_timeout_ms;
  l.parser.max_url_bytes = c.max_url_bytes;
  l.parser.max_header_bytes = c.max_header_bytes;
  return l;
}

// The directory of our own binary, where a build keeps the agent and the template runtime.
std::string self_dir() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return ".";
  std::string dir(exe, static_cast<size_t>(n));
  return dir.substr(0, dir.rfind('/'));
}

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "::1" || host == "localhost" || host.rfind("127.", 0) == 0;
}

std::string find_agent_dir(const std::string& configured) {
  if (!configured.empty()) return configured;
  std::string dir = self_dir();
  for (const std::string& cand : {dir + "/agent", dir + "/../share/sandpool"}) {
    if (access((cand + "/sandpool_agent.py").c_str(), R_OK) == 0) return cand;
  }
  return "";
}

// The static sandpool-init of a runtime directory named by --runtime-dir or SANDPOOL_RUNTIME_DIR,
// when it holds one (a build's src/sandbox/ does); else "" (Spawner: the one beside our binary).
// A sanitized build has no static init (tools/test.sh points it at the release build's).
std::string find_container_init(const std::string& configured_runtime_dir) {
  std::string dir = configured_runtime_dir;
  if (dir.empty()) {
    const char* env = getenv("SANDPOOL_RUNTIME_DIR");
    dir = env ? env : "";
  }
  if (dir.empty()) return "";
  std::string init = dir + "/sandpool-init";
  return access(init.c_str(), X_OK) == 0 ? init : "";
}

// Every session holds two descriptors (its agent's socket and its pidfd) and every connection one,
// so the usual soft limit of 1024 open files (systemd's default for services and logins; the hard
// limit is 524288) would cap a server near 450 sessions. Raised to the hard limit, as Go and nginx
// do; the sandboxes set their own (4096, sandbox/caps.cc), so they do not inherit it.
void raise_open_files_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const rlim_t before = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = before;
  }
  if (rl.rlim_cur < 4096) {
    // (Sandbox set-up puts descriptors at 200-255 and from 256 up: sandbox/mounts.h, process_spawn.cc.)
    LOG_WARN("open files limited to %llu (hard limit): sandboxes need more than 264 to start, then each "
             "session takes two and each connection one", static_cast<unsigned long long>(rl.rlim_cur));
  } else if (rl.rlim_cur != before) {
    LOG_DEBUG("open files limit raised from %llu to %llu", static_cast<unsigned long long>(before),
              static_cast<unsigned long long>(rl.rlim_cur));
  }
}

// Entries of /proc/self/fd, less the directory's own descriptor (one getdents pass per scrape).
uint64_t count_open_fds() {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return 0;
  uint64_t n = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n > 0 ? n - 1 : 0;
}

}  // namespace

Server::Server(const ServerConfig& config)
    : config_(config),
      api_(config.max_body_bytes),
      http_(&loop_, http_limits(config), &api_),
      pools_(&loop_, [this](uv_loop_t* loop, const pool::PoolSettings& s) -> Result<std::unique_ptr<pool::SandboxSource>> {
        if (s.container_type == pool::ContainerType::kCustomContainer) {
          container::ContainerSourceOptions co;
          co.image_store_dir = config_.image_store;
          co.log_lines_per_second = config_.container_log_rate;
          co.init_path = find_container_init(config_.runtime_dir);
          // Its parents must exist (the importer makes one level); searchable by the sandboxes' ids.
          for (size_t slash = co.image_store_dir.find('/', 1); slash != std::string::npos;
               slash = co.image_store_dir.find('/', slash + 1)) {
            mkdir(co.image_store_dir.substr(0, slash).c_str(), 0755);
          }
          return std::unique_ptr<pool::SandboxSource>(new container::ContainerSource(loop, s, co));
        }
        pool::ProcessSourceOptions o;
        o.agent_dir = find_agent_dir(config_.agent_dir);
        o.runtime_dir = config_.runtime_dir;
        o.template_memory = config_.template_memory;
        o.templates = config_.templates_per_pool;
        if (o.agent_dir.empty()) return Error{ENOENT, "sandpool_agent.py not found (use --agent-dir)"};
        // Shell pools run commands as subprocesses, which a micro-VM guest cannot start.
        const bool shell = s.container_type == pool::ContainerType::kShell;
        if (shell && s.isolation == pool::Isolation::kMicroVm)
          return Error{ENOTSUP, "containerType Shell needs isolation process (a micro-VM runs one process)"};
        if (s.isolation != pool::Isolation::kProcess && !shell) {
          static std::string kvm_why;  // probed once: the answer does not change while we run
          static const bool kvm_ok = vmm::kvm_usable(&kvm_why);
          bool microvm = kvm_ok;
          if (s.isolation == pool::Isolation::kMicroVm && !kvm_ok) {
            LOG_ERROR("pool %s: isolation microvm needs KVM: %s", s.name.c_str(), kvm_why.c_str());
            return Error{ENODEV, "isolation microvm needs KVM (/dev/kvm and KVM_CREATE_VM)"};
          }
          if (s.isolation == pool::Isolation::kAuto)
            LOG_INFO("pool %s: isolation auto -> %s (%s)", s.name.c_str(), microvm ? "microvm" : "process", kvm_why.c_str());
          if (microvm)
            return std::unique_ptr<pool::SandboxSource>(new pool::MicroVmSource(loop, s, o, self_dir() + "/sandpool"));
        }
        return std::unique_ptr<pool::SandboxSource>(new pool::ProcessSource(loop, s, o));
      }) {}

Status Server::start_pools() {
  std::string msg;
  if (config_.default_pool) {
    pool::PoolSettings s;
    if (!config_.default_pool_json.empty() &&
        !pool::apply_settings_json("{" + config_.default_pool_json + "}", &s, &msg).ok()) {
      LOG_ERROR("default pool: %s", msg.c_str());
      return Error{kEInvalid, "default pool settings"};
    }
    s.name = "default";
    if (!pools_.create_now(s, &msg).ok()) {
      LOG_ERROR("default pool: %s", msg.c_str());
      return Error{kEInvalid, "default pool"};
    }
  }
  if (!config_.pools_file.empty()) {
    FILE* f = std::fopen(config_.pools_file.c_str(), "r");
    if (!f) return errno_error("open pools file");
    std::string text;
    char buf[8192];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    simdjson::dom::array arr;
    if (parser.parse(text).get(root) != simdjson::SUCCESS || root["pools"].get_array().get(arr) != simdjson::SUCCESS) {
      LOG_ERROR("%s: want {\"pools\":[{...}, ...]}", config_.pools_file.c_str());
      return Error{kEInvalid, "pools file"};
    }
    std::vector<std::string> objects;
    for (simdjson::dom::element item : arr) objects.push_back(simdjson::minify(item));
    for (const std::string& o : objects) {
      pool::PoolSettings s;
      s.name = "";
      if (!pool::apply_settings_json(o, &s, &msg).ok() || s.name.empty()) {
        LOG_ERROR("%s: %s", config_.pools_file.c_str(), s.name.empty() && msg.empty() ? "every pool needs a name" : msg.c_str());
        return Error{kEInvalid, "pools file"};
      }
      if (!pools_.create_now(s, &msg).ok()) {
        LOG_ERROR("pool %s: %s", s.name.c_str(), msg.c_str());
        return Error{kEInvalid, "pools file"};
      }
    }
  }
  return {};
}

Status Server::write_port_file(int port) {
  if (config_.port_file.empty()) return {};
  std::string tmp = config_.port_file + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) return errno_error("write port file");
  std::fprintf(f, "%d\n", port);
  std::fclose(f);
  // Renamed into place so a reader never sees a half-written file.
  if (std::rename(tmp.c_str(), config_.port_file.c_str()) != 0) return errno_error("rename port file");
  return {};
}

Status Server::start() {
  system_.ready = [this] { return !draining_; };
  api::add_system_routes(api_, &system_);
  if (config_.test_routes) test_routes_.add(api_, &loop_);
  api_.add_metrics([this](std::string& out) {
    // The usual names of a process's descriptor gauges: two per session, one per connection.
    metric_header(out, "process_open_fds", "gauge", "Open file descriptors of the server process.");
    metric_value(out, "process_open_fds", "", count_open_fds());
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      metric_header(out, "process_max_fds", "gauge", "The server's open-files limit (RLIMIT_NOFILE, soft).");
      metric_value(out, "process_max_fds", "", static_cast<uint64_t>(rl.rlim_cur));
    }
    metric_header(out, "sandpool_http_connections_open", "gauge", "Open HTTP connections.");
    metric_value(out, "sandpool_http_connections_open", "", static_cast<uint64_t>(http_.open_connections()));
    metric_header(out, "sandpool_http_connections_total", "counter", "HTTP connections accepted.");
    metric_value(out, "sandpool_http_connections_total", "", http_.connections_total());
    metric_header(out, "sandpool_loop_busy_poll_hits_total", "counter",
                  "Events the loop found while busy-polling after I/O (--busy-poll-us): wake-ups saved.");
    metric_value(out, "sandpool_loop_busy_poll_hits_total", "", busy_poll_.hits);
    metric_header(out, "sandpool_loop_busy_poll_seconds_total", "counter",
                  "Time the loop spent busy-polling without finding work (yielding to runnable threads).");
    metric_value(out, "sandpool_loop_busy_poll_seconds_total", "", static_cast<double>(busy_poll_.spin_ns) / 1e9);
  });
  if (!is_loopback(config_.host) && config_.api_keys.empty() && !config_.allow_unauthenticated) {
    LOG_ERROR("refusing to serve %s without API keys: give --api-key (or --allow-unauthenticated)", config_.host.c_str());
    return Error{EPERM, "authentication"};
  }
  api::SessionApiOptions session_options;
  session_options.metadata_json = pool::collect_metadata_json();
  api::add_session_routes(api_, pools_, session_options);
  api_.set_key_check([keys = config_.api_keys](const http::Request& r) {
    return api::has_valid_key(r, keys);
  });
  api::add_pool_routes(api_, pools_);
  api::add_file_routes(api_, pools_);
  proxy_ = api::add_proxy_routes(api_, pools_, &loop_, api::ProxyRouteOptions{!config_.api_keys.empty()});
  api_.add_metrics([this](std::string& out) { pools_.render_metrics(out); });
  api::add_openapi_route(api_);
  if (!config_.access_log.empty()) {
    SP_TRY(access_log_.open(&loop_, config_.access_log));
    api_.set_access_log(&access_log_);
  }
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  sigint_.data = sigterm_.data = this;
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  // Bind first: a taken port fails fast, before templates start. Connections wait in the backlog
  // until the pools are up; the port file (readiness for scripts) is written after both.
  SP_TRY_ASSIGN(int port, http_.listen(config_.host.c_str(), config_.port, config_.backlog));
  SP_TRY(start_pools());
  SP_TRY(write_port_file(port));
  LOG_INFO("sandpool %s listening on %s:%d", SANDPOOL_VERSION, config_.host.c_str(), port);
  return {};
}

Status Server::run() {
  Status started = start();
  if (!started.ok()) {
    LOG_ERROR("start-up failed: %s", started.error().message().c_str());
    begin_shutdown(0);
  }
  run_loop(&loop_, config_.busy_poll_us * 1000, &busy_poll_);
  int rc = uv_loop_close(&loop_);
  if (rc != 0) {
    LOG_ERROR("loop did not close cleanly: %s", uv_strerror(rc));
    uv_print_all_handles(&loop_, stderr);
    return Error{-rc, "uv_loop_close"};
  }
  return started;
}

void Server::on_signal(uv_signal_t* handle, int signum) { static_cast<Server*>(handle->data)->begin_shutdown(signum); }

void Server::begin_shutdown(int signum) {
  if (draining_) {
    if (signum != 0) LOG_WARN("second signal: closing every connection now");
    http_.shutdown(0, on_http_closed, this);
    return;
  }
  draining_ = true;
  if (signum != 0) {
    LOG_INFO("signal %d: draining (at most %llu ms)", signum,
             static_cast<unsigned long long>(config_.shutdown_timeout_ms));
  }
  http_.shutdown(config_.shutdown_timeout_ms, on_http_closed, this);
}

void Server::on_http_closed(void* arg) {
  auto* self = static_cast<Server*>(arg);
  // Handlers still owing answers to closed connections are told to stop now; then the pools end
  // their sessions and sandboxes.
  self->test_routes_.cancel_all();
  self->pools_.stop([self] {
    self->close_own_handles();
    LOG_INFO("stopped");
  });
}

void Server::close_own_handles() {
  access_log_.close();
  for (uv_signal_t* s : {&sigint_, &sigterm_}) {
    if (s->loop && !uv_is_closing(reinterpret_cast<uv_handle_t*>(s))) uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  }
}

int serve_main(int argc, char** argv) {
  ServerConfig config;
  std::string error, help;
  if (!parse_serve_args(argc, argv, &config, &error, &help)) {
    if (!error.empty()) {
      std::fprintf(stderr, "sandpool serve: %s\n", error.c_str());
      return 2;
    }
    std::fputs(help.c_str(), stdout);
    return 0;
  }
  set_log_level(config.log_level);
  signal(SIGPIPE, SIG_IGN);
  raise_open_files_limit();
  Server server(config);
  Status s = server.run();
  return s.ok() ? 0 : 1;
}

}  // namespace sp
