// The interface between the HTTP layer and the API layer: what a connection asks of its handler.
// Everything here runs on the loop thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "http/parser.h"

namespace sp::http {

class Connection;

// The other end of a tunnelled connection (an Upgrade answered 101 by a proxied server).
class TunnelPeer {
 public:
  virtual ~TunnelPeer() = default;
  virtual void on_tunnel_data(std::string_view data) = 0;  // bytes from the client, in order
  virtual void on_tunnel_eof() = 0;     // the client half-closed its side
  virtual void on_tunnel_closed() = 0;  // the client connection is gone; no call follows
};

// The streamed answer's length is not known ahead (begin_stream).
inline constexpr uint64_t kUnknownLength = ~uint64_t{0};

// One request awaiting its response. Valid from RequestHandler::on_request until respond() is
// called; a handler may keep the pointer and respond later (asynchronously). If the peer goes away
// meanwhile, respond() still must be called once (it then discards the response); peer_gone() tells.
class Exchange {
 public:
  Request& request();
  bool head_request() const;
  bool peer_gone() const;
  uint64_t start_ns() const { return start_ns_; }
  // Forms the response. `extra_headers` are complete "Name: value\r\n" lines.
  void respond(int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers = {});
  bool responded() const { return responded_; }
  // A streamed answer of known length: begin_stream(), then stream_write() pieces adding up to
  // exactly `content_length` bytes, then end_stream(). pending_output() tells how much is not yet
  // sent; on_drained (set before writing) runs once the pending output falls below 256 KiB.
  // With kUnknownLength the body is sent chunked to HTTP/1.1 clients and ends with the connection
  // for HTTP/1.0 ones. 1xx, 204, 304 and HEAD answers carry no body: writes are dropped.
  void begin_stream(int status, std::string_view content_type, uint64_t content_length,
                    std::string_view extra_headers = {});
  void stream_write(std::string_view data);
  void end_stream();
  // The streamed answer cannot be completed (its source failed): the connection is closed so the
  // client sees a short body instead of a wrong one, and the exchange ends.
  void fail_stream();
  size_t pending_output() const;
  void on_drained(std::function<void()> fn);
  // Runs once if the client connection closes while this exchange still owes its answer (or
  // while its tunnel runs); cleared when the exchange ends.
  void on_peer_gone(std::function<void()> fn);
  // Streamed bodies: stop / restart reading the request body (flow control). Bytes already read
  // are still delivered; pausing only stops further reads.
  void pause_body();
  void resume_body();
  // Upgrade: sends `head` (a complete 101 response head, as bytes) and turns the connection into a
  // byte tunnel: the exchange ends (status 101); input goes to `peer`, starting with bytes that
  // followed the request; tunnel_write() sends. tunnel_close() ends it without a call to the peer.
  // pending_output()/on_drained() work as for streamed answers.
  void begin_tunnel(std::string_view head, TunnelPeer* peer);
  void tunnel_write(std::string_view data);
  void pause_tunnel_input();
  void resume_tunnel_input();
  void tunnel_shutdown();  // half-close towards the client after the pending output
  void tunnel_close();

 private:
  friend class Connection;
  Connection* conn_ = nullptr;
  uint64_t start_ns_ = 0;
  bool responded_ = false;
  bool streaming_answer_ = false;
  bool stream_chunked_ = false;
  bool stream_bodyless_ = false;
  int stream_status_ = 0;
  uint64_t stream_bytes_ = 0;
};

struct HeadDecision {
  uint64_t max_body_bytes = 0;
  bool store_body = true;
  bool stream = false;  // deliver the body through on_body() as it arrives instead of storing it
};

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // After the request head: route it (the handler may record the route in request.route) and say
  // how much body it accepts. A Content-Length above the limit is answered 413 at once.
  // `ex` is not yet answerable; a streaming handler may keep it to receive on_body().
  virtual HeadDecision on_head(Exchange& ex) = 0;
  // Streamed bodies only: the next piece of the body, in order.
  virtual void on_body(Exchange& ex, std::string_view chunk) {
    (void)ex;
    (void)chunk;
  }
  // Streamed bodies only: the request ended before on_request (peer gone, limit passed, timeout).
  // on_request will not follow; on_protocol_error may (to form the error answer).
  virtual void on_abort(Exchange& ex) { (void)ex; }
  // The complete request. Must lead to exactly one ex.respond(), now or later.
  virtual void on_request(Exchange& ex) = 0;
  // The connection layer answered by itself (400, 408, 413, 414, 431): form the error body.
  virtual void on_protocol_error(Exchange& ex, int status, const char* reason) = 0;
  // After each response is formed (metrics, access log). `request` is still valid.
  virtual void on_response(const Request& request, int status, uint64_t latency_ns, size_t body_bytes) = 0;
};

}  // namespace sp::http
