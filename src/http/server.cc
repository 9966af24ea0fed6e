// HttpServer: accept with a connection cap, timeout lists swept by one timer, graceful shutdown.
#include "http/server.h"

#include <algorithm>
#include <ctime>

#include "http/connection.h"
#include "http/response.h"
#include "util/log.h"

namespace sp::http {

HttpServer::HttpServer(uv_loop_t* loop, const HttpLimits& limits, RequestHandler* handler)
    : loop_(loop), limits_(limits), handler_(handler) {}

HttpServer::~HttpServer() = default;

Result<int> HttpServer::listen(const char* host, int port, int backlog) {
  sockaddr_storage addr{};
  if (uv_ip4_addr(host, port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host, port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    return Error{EINVAL, "listen address"};
  }
  int rc = uv_tcp_init(loop_, &listener_);
  if (rc != 0) return Error{-rc, "uv_tcp_init"};
  listener_.data = this;
  ++handles_open_;
  listening_ = true;
  rc = uv_tcp_bind(&listener_, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), backlog, on_connection);
  if (rc != 0) return Error{-rc, "bind/listen"};
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  int bound_port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                     : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  // One sweep timer serves every timeout list; its period bounds how late a timeout fires.
  uint64_t shortest = std::min({limits_.header_timeout_ms, limits_.idle_timeout_ms, limits_.linger_ms});
  uint64_t period = std::clamp<uint64_t>(shortest / 4, 5, 1000);
  uv_timer_init(loop_, &sweep_);
  sweep_.data = this;
  ++handles_open_;
  uv_timer_start(&sweep_, on_sweep, period, period);
  uv_unref(reinterpret_cast<uv_handle_t*>(&sweep_));
  uv_timer_init(loop_, &shutdown_timer_);
  shutdown_timer_.data = this;
  ++handles_open_;
  return bound_port;
}

void HttpServer::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<HttpServer*>(server->data);
  if (status < 0) {
    LOG_WARN("accept: %s", uv_strerror(status));
    return;
  }
  if (self->shutting_down_) return;
  if (self->open_ >= self->limits_.max_connections) {
    // Not accepting leaves the socket queued and makes libuv stop polling the listener until
    // uv_accept is called again (from connection_closed).
    if (!self->accept_paused_) LOG_WARN("connection limit %zu reached: accepting paused", self->limits_.max_connections);
    self->accept_paused_ = true;
    return;
  }
  self->accept_one();
}

void HttpServer::accept_one() {
  auto* c = new Connection(this);
  uv_tcp_init(loop_, c->tcp());
  if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener_), reinterpret_cast<uv_stream_t*>(c->tcp())) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(c->tcp()), [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
    return;
  }
  ++open_;
  ++total_;
  c->all_next_ = all_;
  if (all_) all_->all_prev_ = c;
  all_ = c;
  c->start();
}

void HttpServer::on_handle_closed(uv_handle_t* handle) {
  auto* c = static_cast<Connection*>(handle->data);
  c->server_->connection_closed(c);
}

void HttpServer::connection_closed(Connection* c) {
  if (c->all_prev_) c->all_prev_->all_next_ = c->all_next_;
  if (c->all_next_) c->all_next_->all_prev_ = c->all_prev_;
  if (all_ == c) all_ = c->all_next_;
  --open_;
  if (c->owes_response_) {
    c->handle_closed_ = true;  // freed by finish_exchange when the handler answers
  } else {
    delete c;
  }
  if (accept_paused_ && !shutting_down_ && open_ < limits_.max_connections) {
    accept_paused_ = false;
    LOG_INFO("below the connection limit: accepting again");
    accept_one();
  }
  maybe_finished();
}

void HttpServer::list_remove(Connection* c) {
  ConnList* l = c->list_;
  if (!l) return;
  if (c->prev_) c->prev_->next_ = c->next_; else l->head = c->next_;
  if (c->next_) c->next_->prev_ = c->prev_; else l->tail = c->prev_;
  c->prev_ = c->next_ = nullptr;
  c->list_ = nullptr;
}

void HttpServer::list_push(ConnList* list, Connection* c, uint64_t deadline_ms) {
  list_remove(c);
  c->deadline_ms_ = deadline_ms;
  c->list_ = list;
  c->prev_ = list->tail;
  if (list->tail) list->tail->next_ = c; else list->head = c;
  list->tail = c;
}

void HttpServer::on_sweep(uv_timer_t* timer) {
  auto* self = static_cast<HttpServer*>(timer->data);
  uint64_t now = uv_now(self->loop_);
  for (ConnList* l : {&self->head_, &self->idle_, &self->linger_}) {
    while (l->head && l->head->deadline_ms_ <= now) {
      Connection* c = l->head;
      self->list_remove(c);
      c->on_timeout();
    }
  }
}

std::string_view HttpServer::date() {
  int64_t now = static_cast<int64_t>(::time(nullptr));
  if (now != date_second_) {
    date_second_ = now;
    format_http_date(now, date_);
  }
  return std::string_view(date_, sizeof date_);
}

void HttpServer::shutdown(uint64_t timeout_ms, void (*on_closed)(void*), void* arg) {
  if (shutting_down_) return;
  shutting_down_ = true;
  on_closed_ = on_closed;
  on_closed_arg_ = arg;
  auto closed = [](uv_handle_t* h) {
    auto* self = static_cast<HttpServer*>(h->data);
    --self->handles_open_;
    self->maybe_finished();
  };
  if (listening_) {
    listening_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), closed);
  }
  for (Connection* c = all_; c;) {
    Connection* next = c->all_next_;
    c->shutdown_server();
    c = next;
  }
  // A head still arriving gets a short grace, not the whole header timeout (10 s by default), to
  // hold the shutdown for: complete by then, it is answered (with Connection: close); else 408.
  // The list is ordered by deadline, and taking the minimum with one value keeps it so.
  const uint64_t grace_end = uv_now(loop_) + kShutdownHeadGraceMs;
  for (Connection* c = head_.head; c; c = c->next_) c->deadline_ms_ = std::min(c->deadline_ms_, grace_end);
  if (handles_open_ > 1) {
    uv_timer_start(&shutdown_timer_, on_shutdown_deadline, timeout_ms, 0);
  }
  maybe_finished();
}

void HttpServer::on_shutdown_deadline(uv_timer_t* timer) {
  auto* self = static_cast<HttpServer*>(timer->data);
  if (self->open_ > 0) LOG_WARN("shutdown deadline: closing %zu connection(s)", self->open_);
  for (Connection* c = self->all_; c;) {
    Connection* next = c->all_next_;
    c->force_close();
    c = next;
  }
}

void HttpServer::maybe_finished() {
  if (!shutting_down_ || open_ > 0) return;
  auto closed = [](uv_handle_t* h) {
    auto* self = static_cast<HttpServer*>(h->data);
    --self->handles_open_;
    self->maybe_finished();
  };
  // Close the timers once, after the connections; report when every handle is gone.
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&sweep_)) && sweep_.loop) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sweep_), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), closed);
    return;
  }
  if (handles_open_ == 0 && on_closed_) {
    auto cb = on_closed_;
    on_closed_ = nullptr;
    cb(on_closed_arg_);
  }
}

}  // namespace sp::http
