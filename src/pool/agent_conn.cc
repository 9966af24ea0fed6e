// AgentConn: frames in and out of one agent socket.
#include "pool/agent_conn.h"

#include "util/log.h"

namespace sp::pool {

Result<AgentConn*> AgentConn::open(uv_loop_t* loop, UniqueFd fd, Listener* listener) {
  auto* c = new AgentConn(listener);
  int rc = uv_pipe_init(loop, &c->pipe_, 0);
  if (rc != 0) {
    delete c;
    return Error{-rc, "uv_pipe_init"};
  }
  c->pipe_.data = c;
  rc = uv_pipe_open(&c->pipe_, fd.get());
  if (rc == 0) {
    fd.release();  // the pipe handle owns it now
    rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&c->pipe_), on_alloc, on_read);
  }
  if (rc != 0) {
    c->closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe_), [](uv_handle_t* h) { delete static_cast<AgentConn*>(h->data); });
    return Error{-rc, "open agent socket"};
  }
  return c;
}

void AgentConn::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<AgentConn*>(h->data);
  char* p = c->decoder_.prepare(64 * 1024);
  *buf = uv_buf_init(p, 64 * 1024);
}

void AgentConn::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  auto* c = static_cast<AgentConn*>(s->data);
  if (nread == 0) return;
  if (nread < 0) {
    c->fail(Error{nread == UV_EOF ? EPIPE : static_cast<int>(-nread), "agent connection"});
    return;
  }
  c->decoder_.commit(static_cast<size_t>(nread));
  while (!c->closing_) {
    auto next = c->decoder_.next();
    if (!next.ok()) {
      c->fail(next.error());
      return;
    }
    if (!next.value().has_value()) break;
    c->dispatch(*next.value());
  }
}

void AgentConn::dispatch(const agent::Frame& f) {
  if (f.header.type == agent::FrameType::kHello) {
    auto hello = agent::decode_hello(f);
    if (!hello.ok()) {
      fail(hello.error());
      return;
    }
    listener_->on_agent_hello(hello.value());
    return;
  }
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (pending_[i].first != f.header.request_id) continue;
    ReplyFn fn = std::move(pending_[i].second);
    pending_.erase(pending_.begin() + static_cast<long>(i));
    if (fn) fn(&f, nullptr);
    return;
  }
  // A reply nobody waits for (its request was abandoned): harmless, dropped.
  LOG_DEBUG("agent reply %llu with no waiter", static_cast<unsigned long long>(f.header.request_id));
}

void AgentConn::request(std::string_view frame, uint64_t id, ReplyFn on_reply) {
  if (closing_) {
    // Never synchronously: the caller is still setting up; report on the next loop turn instead.
    if (on_reply) {
      auto* t = new uv_idle_t;
      auto* fn = new ReplyFn(std::move(on_reply));
      uv_idle_init(pipe_.loop, t);
      t->data = fn;
      uv_idle_start(t, [](uv_idle_t* h) {
        auto* f = static_cast<ReplyFn*>(h->data);
        Error e{ECANCELED, "agent connection closed"};
        (*f)(nullptr, &e);
        delete f;
        uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) { delete reinterpret_cast<uv_idle_t*>(x); });
      });
    }
    return;
  }
  if (on_reply) pending_.emplace_back(id, std::move(on_reply));
  out_.append(frame);
  flush();
}

void AgentConn::flush() {
  if (closing_ || write_in_flight_ || out_.empty()) return;
  uv_buf_t b = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
  int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&pipe_), &b, 1);
  if (n < 0 && n != UV_EAGAIN) {
    fail(Error{-n, "write to agent"});
    return;
  }
  size_t done = n > 0 ? static_cast<size_t>(n) : 0;
  if (done == out_.size()) {
    out_.clear();
    return;
  }
  writing_.swap(out_);
  out_.clear();
  uv_buf_t rest = uv_buf_init(writing_.data() + done, static_cast<unsigned>(writing_.size() - done));
  int rc = uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(&pipe_), &rest, 1, on_write);
  if (rc != 0) {
    fail(Error{-rc, "write to agent"});
    return;
  }
  write_in_flight_ = true;
}

void AgentConn::on_write(uv_write_t* req, int status) {
  auto* c = static_cast<AgentConn*>(req->handle->data);
  c->write_in_flight_ = false;
  c->writing_.clear();
  if (status < 0) {
    if (status != UV_ECANCELED) c->fail(Error{-status, "write to agent"});
    return;
  }
  c->flush();
}

void AgentConn::fail(const Error& why) {
  if (closing_) return;
  Listener* l = listener_;
  // The requests in flight learn what happened (not ECANCELED, which means we closed it).
  close_with(why.code == ECANCELED ? Error{EPIPE, why.where} : why);
  if (l) l->on_agent_lost(why);
}

void AgentConn::close_with(const Error& pending_error) {
  if (closing_) return;
  closing_ = true;
  listener_ = nullptr;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, fn] : pending) {
    if (fn) fn(nullptr, &pending_error);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), [](uv_handle_t* h) { delete static_cast<AgentConn*>(h->data); });
}

}  // namespace sp::pool
