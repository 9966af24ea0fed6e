// The interface between the HTTP layer and the API layer: what a connection asks of its handler.
// Everything here runs on the loop thread.
#pragma once

#include <cstdint>
#include <string_view>

#include "http/parser.h"

namespace sp::http {

class Connection;

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
  // Streamed bodies: stop / restart reading the request body (flow control). Bytes already read
  // are still delivered; pausing only stops further reads.
  void pause_body();
  void resume_body();

 private:
  friend class Connection;
  Connection* conn_ = nullptr;
  uint64_t start_ns_ = 0;
  bool responded_ = false;
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
