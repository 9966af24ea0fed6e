// `sandpool serve`: start-up, signal handling and the ordered shutdown that ends with uv_loop_close() == 0.
#include "server.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "cli.h"
#include "util/log.h"

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

}  // namespace

Server::Server(const ServerConfig& config)
    : config_(config), api_(config.max_body_bytes), http_(&loop_, http_limits(config), &api_) {
  uv_loop_init(&loop_);
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
    metric_header(out, "sandpool_http_connections_open", "gauge", "Open HTTP connections.");
    metric_value(out, "sandpool_http_connections_open", "", static_cast<uint64_t>(http_.open_connections()));
    metric_header(out, "sandpool_http_connections_total", "counter", "HTTP connections accepted.");
    metric_value(out, "sandpool_http_connections_total", "", http_.connections_total());
  });
  if (!config_.access_log.empty()) {
    SP_TRY(access_log_.open(&loop_, config_.access_log));
    api_.set_access_log(&access_log_);
  }
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  sigint_.data = sigterm_.data = this;
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  SP_TRY_ASSIGN(int port, http_.listen(config_.host.c_str(), config_.port, config_.backlog));
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
  uv_run(&loop_, UV_RUN_DEFAULT);
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
  // Handlers still owing answers to closed connections are told to stop now.
  self->test_routes_.cancel_all();
  self->close_own_handles();
  LOG_INFO("stopped");
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
  Server server(config);
  Status s = server.run();
  return s.ok() ? 0 : 1;
}

}  // namespace sp
