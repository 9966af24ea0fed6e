// Connection: one accepted TCP connection, its parser, its pending output and its timeout state.
// Owned by HttpServer; loop thread only. Requests on a connection are answered strictly in order:
// while a handler owes a response, parsing stops and the unparsed bytes wait in `in_`.
#pragma once

#include <uv.h>

#include <string>

#include "http/handler.h"
#include "http/parser.h"

namespace sp::http {

class HttpServer;
struct ConnList;

class Connection : private BodySink {
 public:
  Connection(HttpServer* server);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  uv_tcp_t* tcp() { return &tcp_; }
  void start();                     // after uv_accept: begin reading
  void on_timeout();                // its deadline passed (408, idle close, or end of linger)
  void shutdown_server();           // the server is stopping: close now if idle, else after the response
  void force_close();               // close the socket now, whatever it was doing

 private:
  friend class HttpServer;
  friend class Exchange;
  enum class State { kIdle, kHead, kBody, kHandling, kClosing, kTunnel };

  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);

  void process(const char* data, size_t len);
  void on_body_data(std::string_view chunk) override;
  void abort_stream();
  void dispatch();
  void finish_exchange(int status, size_t body_bytes);
  void protocol_error(int status, const char* reason);
  void flush();
  void begin_close();  // half-close after pending output, then drain input until EOF or linger end
  void close_now();
  void set_timeout_for_state();
  void update_reading();
  void maybe_drained();
  void tunnel_input(const char* data, size_t len);

  uv_tcp_t tcp_{};  // first member: the handle's memory is this object's
  HttpServer* server_;
  RequestParser parser_;
  Exchange exchange_;
  State state_ = State::kIdle;
  std::string in_;       // unparsed input kept while a handler is working
  std::string out_;      // responses formed but not yet handed to libuv
  std::string writing_;  // the bytes of the uv_write in flight
  uv_write_t write_req_{};
  uv_shutdown_t shutdown_req_{};
  bool write_in_flight_ = false;
  bool reading_ = false;
  bool eof_ = false;
  bool close_after_output_ = false;
  bool shut_ = false;         // uv_shutdown issued
  bool handle_closing_ = false;
  bool owes_response_ = false;  // a handler holds exchange_
  bool streaming_ = false;      // the current request's body goes to the handler as it arrives
  bool body_paused_ = false;    // the handler asked to stop reading the body
  std::function<void()> on_drained_;  // a streamed answer waits for the output to drain
  std::function<void()> on_gone_;  // Exchange::on_peer_gone
  TunnelPeer* tunnel_ = nullptr;  // kTunnel: where the client's bytes go
  bool tunnel_paused_ = false;
  bool in_dispatch_ = false;    // inside the handler call: a response now is synchronous
  bool handle_closed_ = false;  // the close callback ran while a response was owed
  char peer_[64] = {};
  // Timeout list membership (intrusive).
  ConnList* list_ = nullptr;
  Connection* prev_ = nullptr;
  Connection* next_ = nullptr;
  uint64_t deadline_ms_ = 0;
  // Every open connection (intrusive, for shutdown).
  Connection* all_prev_ = nullptr;
  Connection* all_next_ = nullptr;
};

}  // namespace sp::http
