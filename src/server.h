// Server: owns the loop, signals, the HTTP server and the API; `sandpool serve` runs one.
// Single-threaded: everything here runs on the loop thread that calls run().
#pragma once

#include <uv.h>

#include <memory>

#include "api/access_log.h"
#include "api/api.h"
#include "api/system_routes.h"
#include "config.h"
#include "http/server.h"
#include "pool/pool_manager.h"
#include "proxy/proxy.h"
#include "util/event_loop.h"
#include "util/result.h"

namespace sp {

class Server {
 public:
  explicit Server(const ServerConfig& config);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts listening and runs the loop until SIGTERM/SIGINT and the graceful shutdown end.
  // Returns an error when start-up fails; on return the loop is closed.
  Status run();

 private:
  static void on_signal(uv_signal_t* handle, int signum);
  static void on_http_closed(void* arg);
  void begin_shutdown(int signum);
  Status start();
  Status start_pools();
  static void on_pools_stopped(void* arg);
  Status write_port_file(int port);
  void close_own_handles();

  ServerConfig config_;
  uv_loop_t loop_{};
  // Initializes loop_ before the members below, which register handles on it.
  struct LoopInit {
    explicit LoopInit(uv_loop_t* loop) { uv_loop_init(loop); }
  } loop_init_{&loop_};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  api::Api api_;
  http::HttpServer http_;
  api::AccessLog access_log_;
  api::SystemState system_;
  api::TestRoutes test_routes_;
  pool::PoolManager pools_;
  std::shared_ptr<proxy::Proxy> proxy_;  // custom-container forwarding (also held by its route)
  BusyPollStats busy_poll_;  // run_loop's, shown in /metrics
  bool draining_ = false;
};

}  // namespace sp
