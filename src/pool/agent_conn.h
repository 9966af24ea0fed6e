// AgentConn: the server's end of one agent socket on the libuv loop (framing, request ids, replies);
// not the session logic, which lives in Session.
//
// Threading: loop thread only. Lifetime: created with new, ended with close(); the object deletes
// itself in the handle's close callback (libuv rule), after failing every pending request with
// ECANCELED (closed by us: the session ended) or with the failure itself (the agent was lost).
// Callbacks never fire synchronously from request().
// Errors: EOF, a read error or a protocol violation by the agent calls Listener::on_agent_lost once
// and closes the connection; the sandbox behind it is then considered broken.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::pool {

class AgentConn {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void on_agent_hello(const agent::Hello& hello) = 0;
    virtual void on_agent_lost(const Error& why) = 0;
  };
  // Exactly one of `frame` (the reply) and `error` is non-null. The frame is valid during the call.
  using ReplyFn = std::function<void(const agent::Frame* frame, const Error* error)>;

  static Result<AgentConn*> open(uv_loop_t* loop, UniqueFd fd, Listener* listener);

  uint64_t next_id() { return ++last_id_; }
  // Sends one encoded frame whose request id is `id`; `on_reply` (may be empty for frames that get
  // no reply) is called with the frame answering `id`.
  void request(std::string_view frame, uint64_t id, ReplyFn on_reply);
  size_t pending_output_bytes() const { return out_.size() + writing_.size(); }
  bool open() const { return !closing_; }
  // Stops everything; pending replies get ECANCELED; the object is freed afterwards.
  void close() { close_with(Error{ECANCELED, "agent connection closed"}); }

 private:
  AgentConn(Listener* listener) : listener_(listener) {}
  void close_with(const Error& pending_error);
  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  void flush();
  void fail(const Error& why);
  void dispatch(const agent::Frame& f);

  uv_pipe_t pipe_{};
  Listener* listener_;
  agent::FrameDecoder decoder_;
  std::vector<std::pair<uint64_t, ReplyFn>> pending_;  // few in flight: a vector beats a map
  std::string out_;
  std::string writing_;
  uv_write_t write_req_{};
  bool write_in_flight_ = false;
  bool closing_ = false;
  uint64_t last_id_ = 0;
};

}  // namespace sp::pool
