// Connection: read → parse → dispatch → respond → write, with keep-alive, pipelining and limits.
#include "http/connection.h"

#include <cstdio>
#include <cstring>

#include "http/response.h"
#include "http/server.h"

namespace sp::http {

// ---- Exchange ----

Request& Exchange::request() { return conn_->parser_.request(); }
bool Exchange::head_request() const { return conn_->parser_.request().method == HTTP_HEAD; }
bool Exchange::peer_gone() const { return conn_->handle_closing_; }

void Exchange::pause_body() {
  conn_->body_paused_ = true;
  conn_->update_reading();
}

void Exchange::resume_body() {
  conn_->body_paused_ = false;
  conn_->update_reading();
}

void Exchange::respond(int status, std::string_view content_type, std::string_view body,
                       std::string_view extra_headers) {
  if (responded_) return;
  responded_ = true;
  Connection* c = conn_;
  const Request& req = c->parser_.request();
  if (!req.keep_alive || c->server_->shutting_down_) c->close_after_output_ = true;
  if (!c->handle_closing_) {
    ResponseHead head;
    head.status = status;
    head.content_type = content_type;
    head.extra_headers = extra_headers;
    head.close = c->close_after_output_;
    head.head_only = req.method == HTTP_HEAD;
    append_response(c->out_, head, body, c->server_->date());
  }
  c->finish_exchange(status, body.size());
}

namespace {
constexpr size_t kDrainedBytes = 256 * 1024;
constexpr size_t kMaxInputWhileHandling = 64 * 1024;
}  // namespace

void Exchange::begin_stream(int status, std::string_view content_type, uint64_t content_length,
                            std::string_view extra_headers, bool more_follows) {
  Connection* c = conn_;
  const Request& req = c->parser_.request();
  streaming_answer_ = true;
  stream_status_ = status;
  stream_bodyless_ = status < 200 || status == 204 || status == 304 || req.method == HTTP_HEAD;
  bool unknown = content_length == kUnknownLength;
  stream_chunked_ = unknown && req.http_minor >= 1 && !stream_bodyless_;
  stream_bytes_ = unknown ? 0 : content_length;
  if (!req.keep_alive || c->server_->shutting_down_) c->close_after_output_ = true;
  if (unknown && !stream_chunked_ && !stream_bodyless_) c->close_after_output_ = true;  // HTTP/1.0: EOF ends it
  if (c->handle_closing_) return;
  ResponseHead head;
  head.status = status;
  head.content_type = content_type;
  head.extra_headers = extra_headers;
  head.close = c->close_after_output_;
  head.content_length = unknown ? 0 : content_length;
  head.unknown_length = unknown;
  head.chunked = stream_chunked_;
  head.body_follows_separately = true;
  append_response(c->out_, head, {}, c->server_->date());
  if (!more_follows) c->flush();
}

void Exchange::stream_write(std::string_view data, bool flush) {
  Connection* c = conn_;
  if (c->handle_closing_ || stream_bodyless_ || data.empty()) return;
  if (stream_chunked_) {
    char size[24];
    int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    c->out_.append(size, static_cast<size_t>(n));
    c->out_.append(data);
    c->out_.append("\r\n", 2);
    stream_bytes_ += data.size();
  } else {
    c->out_.append(data);
  }
  if (flush) c->flush();
}

void Exchange::stream_flush() {
  if (!conn_->handle_closing_) conn_->flush();
}

size_t Exchange::pending_output() const { return conn_->out_.size() + conn_->writing_.size(); }

void Exchange::on_drained(std::function<void()> fn) {
  conn_->on_drained_ = std::move(fn);
  conn_->maybe_drained();
}

void Exchange::on_peer_gone(std::function<void()> fn) { conn_->on_gone_ = std::move(fn); }

void Exchange::end_stream() {
  if (responded_) return;
  responded_ = true;
  streaming_answer_ = false;
  if (stream_chunked_ && !conn_->handle_closing_) {
    conn_->out_.append("0\r\n\r\n", 5);
    stream_chunked_ = false;
  }
  conn_->on_drained_ = nullptr;
  conn_->finish_exchange(stream_status_, stream_bytes_);
}

void Exchange::fail_stream() {
  stream_chunked_ = false;  // no last chunk: the client must see the body as cut short
  conn_->close_now();
  end_stream();
}

void Exchange::begin_tunnel(std::string_view head, TunnelPeer* peer) {
  Connection* c = conn_;
  responded_ = true;
  streaming_answer_ = false;
  if (c->handle_closing_) {
    c->finish_exchange(101, 0);  // may free the connection: touch nothing after it
    peer->on_tunnel_closed();
    return;
  }
  c->out_.append(head);
  c->tunnel_ = peer;
  c->state_ = Connection::State::kTunnel;
  c->server_->list_remove(c);  // a tunnel may be quiet for long: its ends decide when it is over
  c->finish_exchange(101, 0);  // in kTunnel it only counts the answer
  // Bytes that followed the request head belong to the tunnel.
  std::string early = std::move(c->in_);
  c->in_.clear();
  if (!early.empty()) c->tunnel_input(early.data(), early.size());
  if (c->tunnel_ && c->eof_) c->tunnel_->on_tunnel_eof();
  if (c->tunnel_) {
    c->update_reading();
    c->flush();
  }
}

void Exchange::tunnel_write(std::string_view data) {
  Connection* c = conn_;
  if (c->handle_closing_ || c->state_ != Connection::State::kTunnel) return;
  c->out_.append(data);
  c->flush();
}

void Exchange::pause_tunnel_input() {
  conn_->tunnel_paused_ = true;
  conn_->update_reading();
}

void Exchange::resume_tunnel_input() {
  conn_->tunnel_paused_ = false;
  conn_->update_reading();
}

void Exchange::tunnel_shutdown() {
  Connection* c = conn_;
  if (c->handle_closing_ || c->shut_) return;
  c->close_after_output_ = true;
  c->flush();
}

void Exchange::tunnel_close() {
  Connection* c = conn_;
  c->tunnel_ = nullptr;
  c->on_drained_ = nullptr;
  c->close_now();
}

void Connection::tunnel_input(const char* data, size_t len) {
  if (tunnel_) tunnel_->on_tunnel_data(std::string_view(data, len));
}

void Connection::maybe_drained() {
  if (!on_drained_) return;
  if (!handle_closing_ && out_.size() + writing_.size() > kDrainedBytes) return;
  // Also when the peer is gone: the writer learns it from peer_gone() and stops.
  auto fn = std::move(on_drained_);
  on_drained_ = nullptr;
  fn();
}

// ---- Connection ----

Connection::Connection(HttpServer* server) : server_(server), parser_(server->limits().parser) {
  exchange_.conn_ = this;
  tcp_.data = this;
}

void Connection::start() {
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    char ip[48] = "?";
    int port = 0;
    if (addr.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      uv_ip4_name(a, ip, sizeof ip);
      port = ntohs(a->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      uv_ip6_name(a, ip, sizeof ip);
      port = ntohs(a->sin6_port);
    }
    std::snprintf(peer_, sizeof peer_, "%s:%d", ip, port);
  }
  uv_tcp_nodelay(&tcp_, 1);
  set_timeout_for_state();
  update_reading();
}

void Connection::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(h->data);
  *buf = uv_buf_init(c->server_->read_buf_, sizeof c->server_->read_buf_);
}

void Connection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(s->data);
  if (nread == 0) return;  // EAGAIN
  if (c->state_ == State::kTunnel) {
    if (nread > 0) {
      c->tunnel_input(buf->base, static_cast<size_t>(nread));
    } else if (nread == UV_EOF) {
      c->eof_ = true;
      c->update_reading();
      if (c->tunnel_) c->tunnel_->on_tunnel_eof();
    } else {
      c->close_now();
    }
    return;
  }
  if (nread < 0) {
    if (nread != UV_EOF) {
      c->close_now();
      return;
    }
    c->eof_ = true;
    c->update_reading();
    if (c->state_ == State::kClosing) {
      c->close_now();
    } else if (c->state_ == State::kHandling) {
      // finish_exchange sees eof_: it answers what was received, then closes.
    } else if (c->write_in_flight_ || !c->out_.empty()) {
      c->close_after_output_ = true;
    } else {
      c->close_now();  // nothing owed: idle, or gone mid-request with nobody to answer
    }
    return;
  }
  if (c->state_ == State::kClosing) return;  // lingering: discard
  c->process(buf->base, static_cast<size_t>(nread));
  c->flush();
}

void Connection::process(const char* data, size_t len) {
  while (!close_after_output_ && !handle_closing_) {
    if (state_ == State::kTunnel) {
      tunnel_input(data, len);
      return;
    }
    if (state_ == State::kHandling) {
      in_.append(data, len);
      update_reading();
      return;
    }
    FeedResult r = parser_.feed(data, len);
    data += r.consumed;
    len -= r.consumed;
    switch (r.event) {
      case ParseEvent::kNeedMore:
        set_timeout_for_state();
        return;
      case ParseEvent::kHead: {
        Request& req = parser_.request();
        req.peer = peer_;
        exchange_.start_ns_ = uv_hrtime();
        exchange_.responded_ = false;
        body_paused_ = false;  // before on_head: a streaming handler may pause at once
        HeadDecision d = server_->handler_->on_head(exchange_);
        streaming_ = d.stream;
        if (!parser_.set_body_limit(d.max_body_bytes, d.store_body, d.stream ? this : nullptr)) {
          protocol_error(parser_.error_status(), parser_.error_reason());
          return;
        }
        if (req.expect_continue && (req.chunked || req.content_length > 0)) {
          out_ += "HTTP/1.1 100 Continue\r\n\r\n";
        }
        state_ = State::kBody;
        break;
      }
      case ParseEvent::kComplete:
        dispatch();
        break;
      case ParseEvent::kError:
        protocol_error(parser_.error_status(), parser_.error_reason());
        return;
    }
  }
}

void Connection::on_body_data(std::string_view chunk) { server_->handler_->on_body(exchange_, chunk); }

void Connection::abort_stream() {
  if (!streaming_) return;
  streaming_ = false;
  body_paused_ = false;
  server_->handler_->on_abort(exchange_);
}

void Connection::dispatch() {
  streaming_ = false;
  body_paused_ = false;
  state_ = State::kHandling;
  server_->list_remove(this);
  owes_response_ = true;
  exchange_.responded_ = false;
  in_dispatch_ = true;
  server_->handler_->on_request(exchange_);
  in_dispatch_ = false;
}

void Connection::finish_exchange(int status, size_t body_bytes) {
  owes_response_ = false;
  if (state_ != State::kTunnel) on_gone_ = nullptr;
  const Request& req = parser_.request();
  server_->handler_->on_response(req, status, uv_hrtime() - exchange_.start_ns_, body_bytes);
  if (handle_closed_) {
    delete this;  // the socket closed while the handler worked; nothing else refers to us
    return;
  }
  if (state_ == State::kHandling) state_ = State::kIdle;
  if (in_dispatch_ || handle_closing_ || state_ == State::kTunnel) return;  // the process() loop goes on by itself
  // An asynchronous answer: go on with the requests that arrived meanwhile.
  std::string pending = std::move(in_);
  in_.clear();
  if (!pending.empty()) process(pending.data(), pending.size());
  if (state_ == State::kIdle && !close_after_output_) set_timeout_for_state();
  if (eof_ && state_ != State::kHandling) close_after_output_ = true;
  update_reading();
  flush();
}

void Connection::protocol_error(int status, const char* reason) {
  abort_stream();
  close_after_output_ = true;
  state_ = State::kHandling;
  server_->list_remove(this);
  owes_response_ = true;
  exchange_.responded_ = false;
  in_dispatch_ = true;
  server_->handler_->on_protocol_error(exchange_, status, reason);
  in_dispatch_ = false;
  if (!exchange_.responded_) exchange_.respond(status, {}, {});
  flush();
}

void Connection::flush() {
  if (handle_closing_ || write_in_flight_) return;
  if (!out_.empty()) {
    uv_buf_t b = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
      close_now();
      return;
    }
    size_t done = n > 0 ? static_cast<size_t>(n) : 0;
    if (done < out_.size()) {
      writing_.swap(out_);
      out_.clear();
      uv_buf_t rest = uv_buf_init(writing_.data() + done, static_cast<unsigned>(writing_.size() - done));
      int rc = uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(&tcp_), &rest, 1, on_write);
      if (rc != 0) {
        close_now();
        return;
      }
      write_in_flight_ = true;
      update_reading();
      return;
    }
    out_.clear();
  }
  if (close_after_output_ && state_ != State::kHandling) begin_close();
  update_reading();
}


void Connection::on_write(uv_write_t* req, int status) {
  auto* c = static_cast<Connection*>(req->handle->data);
  c->write_in_flight_ = false;
  c->writing_.clear();
  if (status < 0) {
    c->close_now();
    c->maybe_drained();
    return;
  }
  c->flush();
  c->maybe_drained();
}

void Connection::begin_close() {
  if (shut_ || handle_closing_) return;
  state_ = State::kClosing;
  shut_ = true;
  if (eof_) {
    close_now();
    return;
  }
  // Half-close so the client sees the whole answer, then read and discard until it closes too or
  // the linger time ends: closing with unread input would reset the connection and lose the answer.
  if (uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), on_shutdown) != 0) {
    close_now();
    return;
  }
  server_->list_push(&server_->linger_, this, uv_now(server_->loop_) + server_->limits_.linger_ms);
  update_reading();
}

void Connection::on_shutdown(uv_shutdown_t* req, int status) {
  auto* c = static_cast<Connection*>(req->handle->data);
  if (status < 0) c->close_now();
}

void Connection::close_now() {
  if (handle_closing_) return;
  handle_closing_ = true;
  abort_stream();
  maybe_drained();  // a streamed answer learns that its peer is gone
  if (on_gone_ && (owes_response_ || state_ == State::kTunnel)) {
    auto fn = std::move(on_gone_);
    on_gone_ = nullptr;
    fn();
  }
  if (TunnelPeer* peer = tunnel_) {
    tunnel_ = nullptr;
    peer->on_tunnel_closed();
  }
  server_->list_remove(this);
  if (reading_) uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), HttpServer::on_handle_closed);
}

void Connection::force_close() { close_now(); }

void Connection::shutdown_server() {
  bool idle = (state_ == State::kIdle && !parser_.in_message() && out_.empty() && !write_in_flight_) ||
              state_ == State::kTunnel;
  if (idle) {
    close_now();
  } else if (state_ != State::kClosing) {
    // The response being prepared will say Connection: close (respond() checks shutting_down_).
    if (state_ == State::kIdle) close_after_output_ = true;
  }
}

void Connection::on_timeout() {
  switch (state_) {
    case State::kIdle:
    case State::kClosing:
      close_now();
      break;
    case State::kHead:
    case State::kBody:
      protocol_error(408, "request not received in time");
      break;
    case State::kHandling:
    case State::kTunnel:
      break;  // not in a timeout list while a handler works or a tunnel runs
  }
}

void Connection::set_timeout_for_state() {
  if (handle_closing_ || state_ == State::kHandling || state_ == State::kClosing) return;
  uint64_t now = uv_now(server_->loop_);
  if (!parser_.in_message()) {
    state_ = State::kIdle;
    server_->list_push(&server_->idle_, this, now + server_->limits_.idle_timeout_ms);
  } else if (!parser_.head_done()) {
    if (state_ != State::kHead) {
      // The head's clock starts at its first byte and is not reset by later bytes.
      state_ = State::kHead;
      server_->list_push(&server_->head_, this, now + server_->limits_.header_timeout_ms);
    }
  } else {
    state_ = State::kBody;
    server_->list_push(&server_->idle_, this, now + server_->limits_.idle_timeout_ms);
  }
}

void Connection::update_reading() {
  if (handle_closing_) return;
  size_t pending = out_.size() + writing_.size();
  // While a handler works, reading goes on until a little input is waiting (pipelined requests are
  // kept in in_): stopping and restarting the watcher would cost three epoll_ctl calls per
  // asynchronous answer, and a client that goes away is noticed at once.
  bool handling_room = state_ != State::kHandling || in_.size() < kMaxInputWhileHandling;
  bool want = !eof_ && handling_room && pending <= server_->limits_.max_pending_output_bytes &&
              (!close_after_output_ || shut_) && !body_paused_;
  if (state_ == State::kTunnel) want = !eof_ && !tunnel_paused_ && !shut_;
  if (want && !reading_) {
    reading_ = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read) == 0;
  } else if (!want && reading_) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    reading_ = false;
  }
}

}  // namespace sp::http
