// Proxy: requests, upstream connections and per-session keep-alive lists.
#include "proxy/proxy.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <vector>

#include "api/errors.h"
#include "pool/pool.h"
#include "proxy/response_parser.h"
#include "util/log.h"

namespace sp::proxy {

using http::has_token;
using http::iequals;

namespace {

constexpr size_t kMaxBuffered = 1u << 20;  // per direction, before the sender is paused
// How long an answer's head may wait for its first body bytes, so that both leave in one write. The
// loop clock counts whole milliseconds (a 1 ms timer could end at once), so the wait is 4 to 5 ms:
// long enough for a body a busy machine delays, short against what a late body costs anyway.
constexpr uint64_t kHoldHeadMs = 5;

// Hop-by-hop headers (RFC 9110 §7.6.1) and the framing headers the proxy sets itself.
bool hop_by_hop(std::string_view name) {
  static const std::string_view kNames[] = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
                                            "transfer-encoding", "upgrade", "content-length", "proxy-authorization",
                                            "proxy-authenticate"};
  for (std::string_view n : kNames) {
    if (iequals(name, n)) return true;
  }
  return false;
}

std::string_view client_address(std::string_view peer) {
  size_t colon = peer.rfind(':');
  return colon == std::string_view::npos ? peer : peer.substr(0, colon);
}

}  // namespace

class Upstream;
class ProxyRequest;

// The proxy's state in one session: kept-alive upstream connections and the requests in flight.
class SessionLink : public pool::SessionAttachment {
 public:
  SessionLink(Proxy* proxy, pool::Session* session) : proxy_(proxy), session_(session) {}
  ~SessionLink() override;
  void on_session_end() override;

  Proxy* proxy_;
  pool::Session* session_;  // null once the session ended
  std::vector<Upstream*> idle_;
  std::list<ProxyRequest*> active_;
};

// One TCP connection to the container, made inside its network namespace.
class Upstream {
 public:
  static Upstream* open(Proxy* proxy, SessionLink* link, Error* error);
  void close();
  void start_reading();
  void stop_reading();
  // Sends the concatenation of `parts` (at most 4): what the socket takes now goes at once (no request, no
  // deferred callback), the rest is copied and queued behind it. A write error is reported through
  // upstream_error() from the loop, as for a queued write. False when the connection is closing.
  bool write(const std::string_view* parts, size_t count);
  bool write(std::string_view data) { return write(&data, 1); }
  size_t queued() const { return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_)); }
  void shutdown();

  uv_tcp_t tcp_{};
  Proxy* proxy_ = nullptr;
  SessionLink* link_ = nullptr;   // null once the session ended
  ProxyRequest* owner_ = nullptr; // the request using it; null while idle
  bool reused_ = false;
  bool closing_ = false;
  bool reading_ = false;

 private:
  struct WriteReq {
    uv_write_t req;
    std::string data;
  };
  static void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_closed(uv_handle_t* h);
  uv_shutdown_t shutdown_req_{};
  bool shut_ = false;
};

class ProxyRequest : public ResponseParser::Listener, public http::TunnelPeer {
 public:
  ProxyRequest(Proxy* proxy, http::Exchange* ex, SessionLink* link);
  ~ProxyRequest() override;

  void begin(std::string_view target);
  void client_body(std::string_view chunk);
  void client_done();
  void client_aborted();
  void session_ended();

  // Upstream events.
  void upstream_data(const char* data, size_t len);
  void upstream_eof();
  void upstream_error(int uv_status);
  void upstream_drained();

  // ResponseParser::Listener
  void on_upstream_head(const UpstreamHead& head) override;
  void on_upstream_body(std::string_view data) override;
  void on_upstream_complete() override;
  // http::TunnelPeer
  void on_tunnel_data(std::string_view data) override;
  void on_tunnel_eof() override;
  void on_tunnel_closed() override;

  std::list<ProxyRequest*>::iterator where_;

 private:
  static void on_deadline(TimerEntry* e, uint64_t now_ms);
  bool connect_upstream();
  bool retry_on_new_connection();
  void send_head();
  void forward(std::string_view data);
  void fail(int status, const char* code, std::string message);
  void deliver_head();
  void flush_answer();
  void finish_upstream(bool reusable);
  void finish();
  void detach_session();
  void begin_tunnel(const char* rest, size_t len);
  void end_tunnel();

  Proxy* proxy_;
  http::Exchange* ex_;
 public:
  http::Exchange* const key_;  // the Proxy's map key (ex_ is cleared when a tunnel's client goes)
 private:
  SessionLink* link_;
  pool::LoopTimers* timers_;
  Upstream* up_ = nullptr;
  ResponseParser parser_{this};
  std::string head_;          // the request head as sent, kept for one retry on a stale connection
  std::string pending_body_;  // body bytes that arrived before the upstream was there
  pool::OwnedTimer<ProxyRequest> deadline_{on_deadline, this};
  uint64_t start_ns_ = 0;
  bool client_chunked_ = false;
  bool has_body_ = false;
  bool body_sent_ = false;      // some body bytes went upstream (no retry after that)
  bool client_done_ = false;    // the whole request arrived: the exchange may be answered
  bool sent_end_ = false;       // the body's end went upstream
  bool answered_ = false;       // the exchange is over (answered, failed or gone)
  bool head_seen_ = false;
  bool streaming_ = false;      // begin_stream was called
  bool upstream_complete_ = false;
  bool upstream_paused_ = false;
  bool body_paused_ = false;
  bool tunnel_ = false;
  bool client_eof_ = false;
  bool upstream_eof_ = false;
  bool upgrade_ = false;
  bool finished_ = false;
  bool in_feed_ = false;
  bool body_forwarded_ = false;  // some answer body went to the client
  bool holding_head_ = false;    // the answer's head waits for body bytes (deadline_ armed)
  const UpstreamHead& uhead() const { return parser_.head(); }  // valid from on_upstream_head on
  std::string early_;  // answer body read before the request was complete
  int err_status_ = 0;  // a failure noted before the exchange could be answered
  const char* err_code_ = "";
  std::string err_message_;
};

// ---- SessionLink ----

SessionLink::~SessionLink() { on_session_end(); }

void SessionLink::on_session_end() {
  session_ = nullptr;
  std::vector<Upstream*> idle = std::move(idle_);
  idle_.clear();
  for (Upstream* u : idle) {
    u->link_ = nullptr;
    u->close();
  }
  while (!active_.empty()) {
    ProxyRequest* r = active_.front();
    active_.pop_front();
    r->where_ = active_.end();
    r->session_ended();
  }
}

// ---- Upstream ----

Upstream* Upstream::open(Proxy* proxy, SessionLink* link, Error* error) {
  pool::ContainerAccess* access = link->session_->pool()->containers();
  if (!access) {
    *error = Error{EINVAL, "not a custom-container session"};
    return nullptr;
  }
  Result<UniqueFd> fd = access->open_upstream(link->session_->sandbox());
  if (!fd.ok()) {
    *error = fd.error();
    return nullptr;
  }
  auto* u = new Upstream();
  u->proxy_ = proxy;
  u->link_ = link;
  uv_tcp_init(proxy->loop_, &u->tcp_);
  u->tcp_.data = u;
  int rc = uv_tcp_open(&u->tcp_, fd.value().get());
  if (rc != 0) {
    *error = Error{-rc, "uv_tcp_open"};
    u->closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&u->tcp_), on_closed);  // the fd is still ours: UniqueFd closes it
    return nullptr;
  }
  fd.value().release();
  uv_tcp_nodelay(&u->tcp_, 1);
  ++proxy->counters_.upstream_connects;
  return u;
}

void Upstream::close() {
  if (closing_) return;
  closing_ = true;
  owner_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_closed);
}

void Upstream::on_closed(uv_handle_t* h) { delete static_cast<Upstream*>(h->data); }

void Upstream::start_reading() {
  if (reading_ || closing_) return;
  reading_ = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read) == 0;
}

void Upstream::stop_reading() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

bool Upstream::write(const std::string_view* parts, size_t count) {
  constexpr size_t kMaxParts = 4;
  if (closing_ || shut_ || count > kMaxParts) return false;
  uv_buf_t bufs[kMaxParts];
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    // SAFETY: libuv only reads from these buffers; uv_buf_t has no const variant.
    bufs[i] = uv_buf_init(const_cast<char*>(parts[i].data()), static_cast<unsigned>(parts[i].size()));
    total += parts[i].size();
  }
  if (total == 0) return true;
  proxy_->counters_.bytes_to_upstream += total;
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  // uv_try_write refuses (UV_EAGAIN) while earlier writes are queued, so the order is kept. On any
  // other error the bytes are queued anyway: uv_write meets the same error and reports it.
  int n = uv_try_write(stream, bufs, static_cast<unsigned>(count));
  size_t sent = n > 0 ? static_cast<size_t>(n) : 0;
  if (sent == total) return true;
  auto* w = new WriteReq{{}, {}};
  w->data.reserve(total - sent);
  for (size_t i = 0; i < count; ++i) {
    std::string_view part = parts[i];
    size_t skip = std::min(sent, part.size());
    sent -= skip;
    w->data.append(part.substr(skip));
  }
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, stream, &b, 1, on_write);
  if (rc != 0) {
    delete w;
    return false;
  }
  return true;
}

void Upstream::shutdown() {
  if (closing_ || shut_) return;
  shut_ = true;
  if (uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t*, int) {}) != 0) shut_ = false;
}

void Upstream::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* u = static_cast<Upstream*>(h->data);
  *buf = uv_buf_init(u->proxy_->read_buf_, sizeof u->proxy_->read_buf_);
}

void Upstream::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* u = static_cast<Upstream*>(s->data);
  if (n == 0) return;
  ProxyRequest* r = u->owner_;
  if (!r) {
    // Idle: the container closed it or sent something unasked; either way it is done.
    if (u->link_) {
      auto& idle = u->link_->idle_;
      idle.erase(std::remove(idle.begin(), idle.end(), u), idle.end());
    }
    u->close();
    return;
  }
  if (n > 0) {
    u->proxy_->counters_.bytes_from_upstream += static_cast<uint64_t>(n);
    r->upstream_data(buf->base, static_cast<size_t>(n));
  } else if (n == UV_EOF) {
    r->upstream_eof();
  } else {
    r->upstream_error(static_cast<int>(n));
  }
}

void Upstream::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  auto* u = static_cast<Upstream*>(req->handle->data);
  delete w;
  if (u->closing_ || !u->owner_) return;
  if (status < 0) {
    u->owner_->upstream_error(status);
    return;
  }
  if (u->queued() < kMaxBuffered / 2) u->owner_->upstream_drained();
}

// ---- ProxyRequest ----

ProxyRequest::ProxyRequest(Proxy* proxy, http::Exchange* ex, SessionLink* link)
    : proxy_(proxy), ex_(ex), key_(ex), link_(link), timers_(&link->session_->pool()->timers()), head_(proxy->take_buffer()) {
  start_ns_ = uv_hrtime();
  where_ = link_->active_.insert(link_->active_.end(), this);
  link_->session_->begin_request();
}

ProxyRequest::~ProxyRequest() {
  if (timers_) timers_->cancel(&deadline_);
  if (up_) up_->close();
  proxy_->give_back(std::move(head_));
}

void ProxyRequest::detach_session() {
  if (link_) {
    if (where_ != link_->active_.end()) link_->active_.erase(where_);
    where_ = link_->active_.end();
    if (link_->session_) link_->session_->end_request();
  }
  link_ = nullptr;
  if (timers_) timers_->cancel(&deadline_);
  timers_ = nullptr;
}

void ProxyRequest::begin(std::string_view target) {
  const http::Request& req = ex_->request();
  client_chunked_ = req.chunked;
  has_body_ = req.chunked || req.content_length > 0;
  upgrade_ = req.upgrade;
  const auto& settings = link_->session_->pool()->settings().container;
  std::string& h = head_;
  h.append(req.method_name).append(" ").append(target).append(" HTTP/1.1\r\n");
  std::string_view connection = req.header("connection");
  std::string forwarded_for;
  for (const http::Header& hd : req.headers) {
    if (hop_by_hop(hd.name) || has_token(connection, hd.name) || iequals(hd.name, "expect") ||
        iequals(hd.name, "x-forwarded-proto") || iequals(hd.name, "x-forwarded-host")) {
      continue;
    }
    if (iequals(hd.name, "authorization") && proxy_->options_.strip_authorization) continue;
    if (iequals(hd.name, "x-forwarded-for")) {
      forwarded_for.append(hd.value).append(", ");
      continue;
    }
    h.append(hd.name).append(": ").append(hd.value).append("\r\n");
  }
  forwarded_for.append(client_address(req.peer));
  h.append("X-Forwarded-For: ").append(forwarded_for).append("\r\n");
  h.append("X-Forwarded-Proto: http\r\n");
  std::string_view host = req.header("host");
  if (!host.empty()) h.append("X-Forwarded-Host: ").append(host).append("\r\n");
  if (upgrade_) h.append("Connection: Upgrade\r\nUpgrade: ").append(req.header("upgrade")).append("\r\n");
  if (client_chunked_) {
    h.append("Transfer-Encoding: chunked\r\n");
  } else if (req.has_content_length) {
    h.append("Content-Length: ").append(std::to_string(req.content_length)).append("\r\n");
  }
  h.append("\r\n");
  ex_->on_peer_gone([this] { client_aborted(); });
  timers_->arm_in(&deadline_, static_cast<uint64_t>(settings.upstream_timeout_seconds) * 1000);
  ++proxy_->counters_.requests;
  if (!connect_upstream()) return;
  send_head();
}

bool ProxyRequest::connect_upstream() {
  SessionLink* link = link_;
  while (!link->idle_.empty()) {
    Upstream* u = link->idle_.back();
    link->idle_.pop_back();
    if (u->closing_) continue;
    u->owner_ = this;
    u->reused_ = true;
    up_ = u;
    ++proxy_->counters_.upstream_reuses;
    return true;
  }
  Error err;
  Upstream* u = Upstream::open(proxy_, link, &err);
  if (!u) {
    fail(502, "BadGateway", "cannot reach the container: " + err.message());
    return false;
  }
  u->owner_ = this;
  up_ = u;
  return true;
}

void ProxyRequest::send_head() {
  parser_.reset(ex_->request().method == HTTP_HEAD);
  up_->start_reading();
  if (!up_->write(head_)) {
    upstream_error(UV_EPIPE);
    return;
  }
  if (!pending_body_.empty()) {
    std::string body = std::move(pending_body_);
    pending_body_.clear();
    forward(body);
  }
  if (client_done_ && !sent_end_) client_done();
}

void ProxyRequest::forward(std::string_view data) {
  if (data.empty()) return;
  body_sent_ = true;
  if (client_chunked_) {
    char size[24];
    int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    std::string_view parts[] = {std::string_view(size, static_cast<size_t>(n)), data, "\r\n"};
    up_->write(parts, 3);
  } else {
    up_->write(data);
  }
  if (up_->queued() > kMaxBuffered && !body_paused_) {
    body_paused_ = true;
    ex_->pause_body();
  }
}

void ProxyRequest::client_body(std::string_view chunk) {
  if (answered_ || err_status_ != 0 || upstream_complete_) return;  // nobody will read it: discard
  if (!up_ || up_->closing_) {
    pending_body_.append(chunk);
    if (pending_body_.size() > kMaxBuffered && !body_paused_) {
      body_paused_ = true;
      ex_->pause_body();
    }
    return;
  }
  forward(chunk);
}

void ProxyRequest::upstream_drained() {
  if (body_paused_ && !answered_) {
    body_paused_ = false;
    ex_->resume_body();
  }
  if (tunnel_) ex_->resume_tunnel_input();
}

void ProxyRequest::client_done() {
  client_done_ = true;
  if (body_paused_) {
    body_paused_ = false;
    ex_->resume_body();
  }
  if (err_status_ != 0) {
    // Failed before the request was in: answer now.
    int status = err_status_;
    err_status_ = 0;
    fail(status, err_code_, err_message_);
    return;
  }
  if (up_ && !up_->closing_ && !sent_end_) {
    if (client_chunked_ && !upstream_complete_) up_->write("0\r\n\r\n");
    sent_end_ = true;
  }
  if (head_seen_) deliver_head();
}

void ProxyRequest::client_aborted() {
  // The client went away (before or during the answer): nothing more to do for it.
  if (answered_) return;
  answered_ = true;
  if (!client_done_) {
    ex_->on_peer_gone(nullptr);  // the request never completed: the exchange owes nothing
  } else if (streaming_) {
    ex_->end_stream();  // the connection is closing: this only ends the exchange
  } else {
    api::respond_error(*ex_, 502, "BadGateway", "the client went away");  // discarded; ends the exchange
  }
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  finish();
}

void ProxyRequest::session_ended() {
  // Called by SessionLink: link_ is being dismantled.
  link_ = nullptr;
  if (timers_) timers_->cancel(&deadline_);
  timers_ = nullptr;
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  if (tunnel_) {
    end_tunnel();
    return;
  }
  fail(502, "BadGateway", "the session ended");
}

void ProxyRequest::on_deadline(TimerEntry* e, uint64_t) {
  ProxyRequest* r = pool::OwnedTimer<ProxyRequest>::owner_of(e);
  if (r->holding_head_) {
    // No body bytes followed the head in time: it goes alone.
    r->holding_head_ = false;
    if (r->streaming_ && !r->answered_) r->ex_->stream_flush();
    return;
  }
  if (r->head_seen_ || r->tunnel_) return;
  if (r->up_) {
    r->up_->close();
    r->up_ = nullptr;
  }
  r->fail(504, "GatewayTimeout", "the container did not answer within upstreamTimeoutInSeconds");
}

void ProxyRequest::fail(int status, const char* code, std::string message) {
  if (answered_) return;
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  if (streaming_) {
    ++proxy_->counters_.cut_short;
    answered_ = true;
    ex_->fail_stream();
    finish();
    return;
  }
  if (!client_done_) {
    // The exchange cannot be answered before the request is in; the rest of the body is discarded.
    if (err_status_ == 0) {
      err_status_ = status;
      err_code_ = code;
      err_message_ = std::move(message);
    }
    if (body_paused_) {
      body_paused_ = false;
      ex_->resume_body();
    }
    return;
  }
  if (status == 504) ++proxy_->counters_.gateway_timeout; else ++proxy_->counters_.bad_gateway;
  answered_ = true;
  api::respond_error(*ex_, status, code, message);
  finish();
}

void ProxyRequest::upstream_data(const char* data, size_t len) {
  if (tunnel_) {
    ex_->tunnel_write(std::string_view(data, len));
    if (ex_->pending_output() > kMaxBuffered && up_) {
      up_->stop_reading();
      ex_->on_drained([this] {
        if (up_ && tunnel_) up_->start_reading();
      });
    }
    return;
  }
  size_t consumed = 0;
  in_feed_ = true;  // a head delivered now waits for the body bytes of this same read
  ResponseParser::Result r = parser_.feed(data, len, &consumed);
  in_feed_ = false;
  if (answered_) return;  // a callback ended the exchange (client gone, or the answer is complete)
  if (streaming_) flush_answer();
  if (r == ResponseParser::Result::kError) {
    fail(502, "BadGateway", std::string("malformed answer from the container: ") + parser_.error());
    return;
  }
  if (r == ResponseParser::Result::kUpgrade) begin_tunnel(data + consumed, len - consumed);
}

void ProxyRequest::flush_answer() {
  if (!body_forwarded_ && timers_) {
    // The head came alone, its body still to come. Servers usually write the body right after the
    // head (as separate segments with TCP_NODELAY); holding the head for it, briefly, sends the
    // answer in one write: the client wakes up once, not twice (nginx's postpone_output does so too).
    if (!holding_head_) {
      holding_head_ = true;
      timers_->arm_in(&deadline_, kHoldHeadMs);
    }
    return;
  }
  if (holding_head_) {
    holding_head_ = false;
    if (timers_) timers_->cancel(&deadline_);
  }
  ex_->stream_flush();
}

void ProxyRequest::upstream_eof() {
  if (tunnel_) {
    upstream_eof_ = true;
    ex_->tunnel_shutdown();
    if (client_eof_) end_tunnel();
    return;
  }
  bool was_in = parser_.in_response();
  if (!parser_.finish()) {
    fail(502, "BadGateway", "the container closed the connection in the middle of its answer");
    return;
  }
  if (answered_) return;
  if (!was_in && !head_seen_) {
    // Closed before answering. A kept-alive connection may have been closed just as we reused it:
    // retry once on a new one when nothing of the body has gone yet.
    if (retry_on_new_connection()) return;
    fail(502, "BadGateway", "the container closed the connection without answering");
    return;
  }
  if (!upstream_complete_) on_upstream_complete();
}

bool ProxyRequest::retry_on_new_connection() {
  // Only idempotent requests without a body are sent twice (RFC 9110 §9.2.2).
  llhttp_method_t m = ex_->request().method;
  bool idempotent = m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS;
  if (!idempotent || !up_ || !up_->reused_ || body_sent_ || has_body_ || !link_ || !link_->session_ || answered_) {
    return false;
  }
  up_->close();
  up_ = nullptr;
  if (connect_upstream()) send_head();
  return true;
}

void ProxyRequest::upstream_error(int uv_status) {
  if (tunnel_) {
    end_tunnel();
    return;
  }
  if (!head_seen_ && uv_status == UV_ECONNRESET && retry_on_new_connection()) return;
  fail(502, "BadGateway", std::string("connection to the container failed: ") + uv_strerror(uv_status));
}

void ProxyRequest::on_upstream_head(const UpstreamHead& head) {
  if (upstream_complete_ || head_seen_) return;  // defensive: the parser ignores what follows an answer
  head_seen_ = true;
  proxy_->head_latency_.observe_ns(uv_hrtime() - start_ns_);
  if (timers_) timers_->cancel(&deadline_);
  if (head.status == 101) return;  // the tunnel starts when feed() returns
  if (client_done_) deliver_head();
}

void ProxyRequest::deliver_head() {
  if (streaming_ || answered_ || uhead().status == 101) return;
  std::string_view connection;  // headers it names are hop-by-hop too
  for (const auto& [name, value] : uhead().headers) {
    if (iequals(name, "connection")) connection = value;
  }
  std::string& headers = proxy_->scratch_;  // begin_stream copies them at once
  headers.clear();
  for (const auto& [name, value] : uhead().headers) {
    if (hop_by_hop(name) || iequals(name, "date") || iequals(name, "server") || has_token(connection, name)) continue;
    headers.append(name).append(": ").append(value).append("\r\n");
  }
  uint64_t length = uhead().has_content_length && !uhead().chunked ? uhead().content_length : http::kUnknownLength;
  streaming_ = true;
  ex_->begin_stream(uhead().status, {}, length, headers, in_feed_ || !early_.empty() || upstream_complete_);
  if (!early_.empty()) {
    std::string early = std::move(early_);
    early_.clear();
    body_forwarded_ = true;
    ex_->stream_write(early);
  }
  if (upstream_complete_) {
    answered_ = true;
    ex_->end_stream();
    finish();
  } else if (upstream_paused_ && up_) {
    upstream_paused_ = false;
    up_->start_reading();
  }
}

void ProxyRequest::on_upstream_body(std::string_view data) {
  if (answered_ || upstream_complete_) return;
  if (!streaming_) {
    early_.append(data);
    if (early_.size() > kMaxBuffered && up_ && !upstream_paused_) {
      upstream_paused_ = true;
      up_->stop_reading();
    }
    return;
  }
  body_forwarded_ = true;
  ex_->stream_write(data, !in_feed_);
  if (ex_->pending_output() > kMaxBuffered && up_ && !upstream_paused_) {
    upstream_paused_ = true;
    up_->stop_reading();
    ex_->on_drained([this] {
      if (answered_ || !up_) return;
      upstream_paused_ = false;
      up_->start_reading();
    });
  }
}

void ProxyRequest::on_upstream_complete() {
  if (upstream_complete_) return;
  upstream_complete_ = true;
  if (answered_ && !streaming_ && !tunnel_) return;  // the client went away meanwhile
  if (answered_) {
    finish_upstream(false);
    finish();
    return;
  }
  // The connection can serve the session's next request only when both messages ended cleanly.
  bool reusable = uhead().keep_alive && (sent_end_ || !has_body_) && client_done_;
  finish_upstream(reusable);
  if (!streaming_) {
    if (client_done_) deliver_head();
    return;
  }
  answered_ = true;
  ex_->end_stream();
  finish();
}

void ProxyRequest::finish_upstream(bool reusable) {
  Upstream* u = up_;
  up_ = nullptr;
  if (!u) return;
  u->owner_ = nullptr;
  if (reusable && link_ && link_->session_ && link_->idle_.size() < proxy_->options_.idle_upstreams_per_session) {
    u->start_reading();  // an idle connection that becomes readable was closed by the container
    link_->idle_.push_back(u);
  } else {
    u->close();
  }
}

void ProxyRequest::begin_tunnel(const char* rest, size_t len) {
  if (!client_done_ || !upgrade_) {
    fail(502, "BadGateway", "the container switched protocols without being asked to");
    return;
  }
  std::string head = "HTTP/1.1 101 Switching Protocols\r\n";
  for (const auto& [name, value] : uhead().headers) {
    if (hop_by_hop(name) && !iequals(name, "upgrade") && !iequals(name, "connection")) continue;
    head.append(name).append(": ").append(value).append("\r\n");
  }
  head.append("\r\n");
  tunnel_ = true;
  answered_ = true;
  ++proxy_->counters_.tunnels;
  ex_->on_peer_gone(nullptr);
  ex_->begin_tunnel(head, this);  // may call on_tunnel_closed (client already gone)
  if (!tunnel_) return;
  if (len > 0) ex_->tunnel_write(std::string_view(rest, len));
}

void ProxyRequest::on_tunnel_data(std::string_view data) {
  if (!up_) return;
  up_->write(data);
  if (up_->queued() > kMaxBuffered) ex_->pause_tunnel_input();
}

void ProxyRequest::on_tunnel_eof() {
  client_eof_ = true;
  if (up_) up_->shutdown();
  if (upstream_eof_) end_tunnel();
}

void ProxyRequest::on_tunnel_closed() {
  // The client connection is gone; the exchange object with it.
  ex_ = nullptr;
  if (!tunnel_) return;
  tunnel_ = false;
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  finish();
}

void ProxyRequest::end_tunnel() {
  if (!tunnel_) return;
  tunnel_ = false;
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  if (ex_) ex_->tunnel_close();
  finish();
}

void ProxyRequest::finish() {
  // Idempotent: the client can go away inside a callback (a failed write) that then goes on.
  if (finished_) return;
  finished_ = true;
  detach_session();
  proxy_->forget(this);
}

// ---- Proxy ----

Proxy::Proxy(uv_loop_t* loop, ProxyOptions options) : loop_(loop), options_(options) {}

Proxy::~Proxy() {
  // Sessions end before the proxy (the pools stop first); anything left is freed here.
  for (auto& [ex, r] : requests_) finished_.push_back(r);
  requests_.clear();
  collect();
}

void Proxy::start(http::Exchange& ex, pool::Session* session, std::string_view target) {
  collect();
  auto* link = static_cast<SessionLink*>(session->attachment());
  if (!link) {
    auto owned = std::make_unique<SessionLink>(this, session);
    link = owned.get();
    session->set_attachment(std::move(owned));
  }
  auto* r = new ProxyRequest(this, &ex, link);
  requests_[&ex] = r;
  r->begin(target);
}

std::string Proxy::take_buffer() {
  if (spare_buffers_.empty()) {
    std::string buf;
    buf.reserve(512);
    return buf;
  }
  std::string buf = std::move(spare_buffers_.back());
  spare_buffers_.pop_back();
  return buf;
}

void Proxy::give_back(std::string&& buf) {
  constexpr size_t kMaxSpares = 64, kMaxKeptBytes = 4096;
  if (spare_buffers_.size() >= kMaxSpares || buf.capacity() > kMaxKeptBytes) return;
  buf.clear();
  spare_buffers_.push_back(std::move(buf));
}

void Proxy::body(http::Exchange& ex, std::string_view chunk) {
  auto it = requests_.find(&ex);
  if (it != requests_.end()) it->second->client_body(chunk);
}

void Proxy::request_complete(http::Exchange& ex) {
  auto it = requests_.find(&ex);
  if (it != requests_.end()) it->second->client_done();
}

void Proxy::abort(http::Exchange& ex) {
  auto it = requests_.find(&ex);
  if (it != requests_.end()) it->second->client_aborted();
}

void Proxy::forget(ProxyRequest* r) {
  auto it = requests_.find(r->key_);
  if (it != requests_.end() && it->second == r) requests_.erase(it);
  // Freed later: forget() runs inside the request's own callbacks.
  finished_.push_back(r);
}

void Proxy::collect() {
  std::vector<ProxyRequest*> done = std::move(finished_);
  finished_.clear();
  for (ProxyRequest* r : done) delete r;
}

void Proxy::render_metrics(std::string& out) const {
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ").append(name).append(" counter\n");
    out.append(name).append(" ").append(std::to_string(v)).append("\n");
  };
  counter("sandpool_proxy_requests_total", "Requests forwarded to custom containers.", counters_.requests);
  counter("sandpool_proxy_upstream_connects_total", "Connections opened to containers.", counters_.upstream_connects);
  counter("sandpool_proxy_upstream_reuses_total", "Requests sent on a kept-alive container connection.", counters_.upstream_reuses);
  counter("sandpool_proxy_bad_gateway_total", "Requests answered 502 (container refused, reset or broke the protocol).", counters_.bad_gateway);
  counter("sandpool_proxy_gateway_timeout_total", "Requests answered 504 (no answer in upstreamTimeoutInSeconds).", counters_.gateway_timeout);
  counter("sandpool_proxy_cut_short_total", "Answers the container cut off after they began.", counters_.cut_short);
  counter("sandpool_proxy_tunnels_total", "Upgrades tunnelled (websockets).", counters_.tunnels);
  counter("sandpool_proxy_bytes_to_upstream_total", "Bytes sent to containers.", counters_.bytes_to_upstream);
  counter("sandpool_proxy_bytes_from_upstream_total", "Bytes received from containers.", counters_.bytes_from_upstream);
  out.append("# HELP sandpool_proxy_active_requests Requests being forwarded now.\n# TYPE sandpool_proxy_active_requests gauge\n");
  out.append("sandpool_proxy_active_requests ").append(std::to_string(requests_.size())).append("\n");
  out.append("# HELP sandpool_proxy_upstream_head_seconds Request start to the container's answer head.\n# TYPE sandpool_proxy_upstream_head_seconds histogram\n");
  head_latency_.render(out, "sandpool_proxy_upstream_head_seconds", "");
}

}  // namespace sp::proxy
