// HttpServer: the listening socket and its connections on one libuv loop; HTTP/1.1 only.
//
// Threading: every method and callback runs on the loop thread. The server never blocks: reads,
// writes and timers are libuv events. It owns each Connection; a connection's memory is freed in its
// close callback (libuv rule), never while a handler still owes it a response.
// Timeouts: a request whose head is not complete within header_timeout_ms gets 408; a keep-alive
// connection idle for idle_timeout_ms is closed. At max_connections the server stops accepting and
// resumes when a connection closes.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

#include "http/handler.h"
#include "http/parser.h"
#include "util/result.h"

namespace sp::http {

struct HttpLimits {
  size_t max_connections = 10000;
  uint64_t header_timeout_ms = 10000;
  uint64_t idle_timeout_ms = 60000;
  uint64_t linger_ms = 1000;            // after an error response, how long unread input is drained
  size_t max_pending_output_bytes = 4u << 20;  // stop reading a client that does not read its answers
  ParserLimits parser;
};

// An intrusive FIFO of connections that share one timeout duration, oldest deadline first.
struct ConnList {
  Connection* head = nullptr;
  Connection* tail = nullptr;
};

class HttpServer {
 public:
  HttpServer(uv_loop_t* loop, const HttpLimits& limits, RequestHandler* handler);
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();

  // Binds and listens; returns the bound port (useful with port 0).
  Result<int> listen(const char* host, int port, int backlog);

  // Graceful stop: no more accepts; idle connections close now; a request in progress gets its
  // response (with Connection: close); after `timeout_ms` whatever is left is closed. `on_closed`
  // runs once, from a close callback, when the listener and all connections are gone.
  void shutdown(uint64_t timeout_ms, void (*on_closed)(void* arg), void* arg);

  size_t open_connections() const { return open_; }
  uint64_t connections_total() const { return total_; }
  uv_loop_t* loop() const { return loop_; }
  const HttpLimits& limits() const { return limits_; }

  // The Date header value for now, reformatted at most once a second.
  std::string_view date();

 private:
  friend class Connection;
  friend class Exchange;
  static void on_connection(uv_stream_t* server, int status);
  static void on_sweep(uv_timer_t* timer);
  static void on_shutdown_deadline(uv_timer_t* timer);
  static void on_handle_closed(uv_handle_t* handle);
  void accept_one();
  void connection_closed(Connection* c);
  void maybe_finished();
  void list_remove(Connection* c);
  void list_push(ConnList* list, Connection* c, uint64_t deadline_ms);

  // How long a request head still arriving when shutdown() begins may take to complete.
  static constexpr uint64_t kShutdownHeadGraceMs = 1000;

  uv_loop_t* loop_;
  HttpLimits limits_;
  RequestHandler* handler_;
  uv_tcp_t listener_{};
  uv_timer_t sweep_{};
  uv_timer_t shutdown_timer_{};
  bool listening_ = false;
  bool accept_paused_ = false;
  bool shutting_down_ = false;
  int handles_open_ = 0;  // listener, sweep timer, shutdown timer
  size_t open_ = 0;
  uint64_t total_ = 0;
  Connection* all_ = nullptr;  // every open connection (for shutdown)
  ConnList idle_;
  ConnList head_;
  ConnList linger_;
  void (*on_closed_)(void*) = nullptr;
  void* on_closed_arg_ = nullptr;
  char read_buf_[64 * 1024];  // shared: each read is consumed or copied before the callback returns
  char date_[29] = {};
  int64_t date_second_ = -1;
};

}  // namespace sp::http
