// Session: executions and file requests over the agent connection, cooldown, teardown.
#include "pool/session.h"

#include <sys/random.h>

#include <cstring>
#include <ctime>

#include "api/json.h"
#include "pool/pool.h"
#include "util/log.h"

namespace sp::pool {

namespace {
constexpr size_t kMaxExecutionsKept = 1000;
constexpr size_t kMaxExecutionBytes = 32u << 20;  // outputs kept for GET executions/{id}, per session

size_t outcome_bytes(const ExecOutcome& o) {
  return o.stdout_text.size() + o.stderr_text.size() + o.result_json.size();
}
// Beyond the agent's own deadline (timeout + its grace period), how long the server waits for an
// answer before it declares the sandbox hung and ends it.
constexpr uint64_t kAgentSlackMs = 10000;

struct PendingExec {
  OwnedTimer<PendingExec> deadline{on_deadline, this};
  Session* session = nullptr;
  static void on_deadline(TimerEntry* e, uint64_t) {
    auto* p = OwnedTimer<PendingExec>::owner_of(e);
    LOG_WARN("session %s: no answer from the agent in time; ending the sandbox", p->session->identifier().c_str());
    p->session->destroy("agent did not answer");
  }
};
}  // namespace

int64_t unix_now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::string format_iso8601_ms(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(unix_ms % 1000));
  return buf;
}

std::string new_uuid() {
  unsigned char b[16];
  if (getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) {
    uint64_t t = static_cast<uint64_t>(unix_now_ms()) ^ reinterpret_cast<uintptr_t>(b);
    std::memcpy(b, &t, 8);
    std::memcpy(b + 8, &t, 8);
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // variant 1
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += kHex[b[i] >> 4];
    out += kHex[b[i] & 15];
  }
  return out;
}

Session::Session(Pool* pool, std::string identifier, Sandbox&& sandbox, int64_t now_unix_ms)
    : cooldown_timer_(on_cooldown, this),
      pool_(pool),
      identifier_(std::move(identifier)),
      sandbox_(std::move(sandbox)),
      created_unix_ms_(now_unix_ms),
      last_access_unix_ms_(now_unix_ms) {}

Session::~Session() { pool_->timers().cancel(&cooldown_timer_); }

Status Session::start(uv_loop_t* loop) {
  // Custom containers have no agent: the proxy reaches them over TCP.
  if (!pool_->is_container_pool()) {
    SP_TRY_ASSIGN(conn_, AgentConn::open(loop, std::move(sandbox_.agent_fd), this));
  }
  if (!timed() && pool_->settings().max_alive_period_seconds != 0) {
    // OnContainerExit: no cooldown; the container's exit ends the session, or this bound does.
    pool_->timers().arm_in(&cooldown_timer_, static_cast<uint64_t>(pool_->settings().max_alive_period_seconds) * 1000);
  }
  touch();
  return {};
}

bool Session::timed() const { return pool_->settings().lifecycle == Lifecycle::kTimed; }

int64_t Session::expires_unix_ms() const {
  if (!timed()) {
    uint32_t max_alive = pool_->settings().max_alive_period_seconds;
    return max_alive == 0 ? 0 : created_unix_ms_ + static_cast<int64_t>(max_alive) * 1000;
  }
  return last_access_unix_ms_ + static_cast<int64_t>(pool_->settings().cooldown_period_seconds) * 1000;
}

void Session::touch() {
  last_access_unix_ms_ = unix_now_ms();
  if (state_ == SessionState::kAllocated && timed()) {
    pool_->timers().arm_in(&cooldown_timer_, static_cast<uint64_t>(pool_->settings().cooldown_period_seconds) * 1000);
  }
}

void Session::begin_request() {
  ++busy_;
  touch();
}

void Session::end_request() {
  if (busy_ > 0) --busy_;
  if (state_ == SessionState::kAllocated) touch();
}

void Session::on_cooldown(TimerEntry* e, uint64_t) {
  Session* s = OwnedTimer<Session>::owner_of(e);
  if (!s->timed()) {
    s->pool_->count_expiry();
    s->destroy("maxAlivePeriodInSeconds reached");
    return;
  }
  if (s->busy_ > 0) {
    // Work in progress is not idleness: the cooldown starts over when it is answered.
    s->touch();
    return;
  }
  s->pool_->count_expiry();
  s->destroy("cooldown expired");
}

uint64_t Session::next_request_id() { return conn_ ? conn_->next_id() : 0; }

size_t Session::agent_pending_output() const { return conn_ ? conn_->pending_output_bytes() : 0; }

void Session::agent_request(std::string_view frame, uint64_t id, AgentConn::ReplyFn on_reply) {
  if (!conn_ || !conn_->open()) {
    Error e{ECANCELED, "session ended"};
    on_reply(nullptr, &e);
    return;
  }
  ++busy_;
  conn_->request(frame, id, [this, on_reply = std::move(on_reply)](const agent::Frame* f, const Error* e) {
    --busy_;
    if (state_ == SessionState::kAllocated) touch();
    on_reply(f, e);
  });
}

void Session::execute(ExecSpec spec, ExecFn done) {
  if (!conn_ || !conn_->open()) {
    ExecOutcome o;
    o.error = Error{ECANCELED, "session ended"};
    done(o);
    return;
  }
  agent::ExecuteRequest req;
  req.mode = spec.mode;
  req.timeout_ms = spec.timeout_ms;
  req.output_limit_bytes = spec.output_limit_bytes;
  req.code = spec.code;
  for (const std::string& a : spec.argv) req.argv.push_back(a);
  req.stdin_bytes = spec.stdin_bytes;
  std::string frame;
  agent::FrameEncoder enc(&frame);
  uint64_t id = conn_->next_id();
  Status st = agent::encode_execute_request(enc, id, req);
  if (!st.ok()) {
    ExecOutcome o;
    o.error = st.error();
    done(o);
    return;
  }
  auto* pending = new PendingExec{};
  pending->session = this;
  pool_->timers().arm_in(&pending->deadline, spec.timeout_ms + kAgentSlackMs);
  ++busy_;
  ++queued_executions_;
  conn_->request(frame, id, [this, pending, done = std::move(done)](const agent::Frame* f, const Error* err) {
    pool_->timers().cancel(&pending->deadline);
    delete pending;
    --busy_;
    --queued_executions_;
    if (state_ == SessionState::kAllocated) touch();
    ExecOutcome o;
    if (err) {
      o.error = *err;
    } else if (f->header.type == agent::FrameType::kError) {
      auto e = agent::decode_error(*f);
      o.error = Error{e.ok() ? e.value().errno_code : kEProtocol, "agent refused the execution"};
      o.refused = true;
    } else {
      auto r = agent::decode_execute_reply(*f);
      if (!r.ok()) {
        o.error = r.error();
        done(o);
        destroy("malformed execute reply");
        return;
      }
      o.replied = true;
      o.status = r.value().status;
      o.flags = r.value().flags;
      o.exit_code = r.value().exit_code;
      o.exec_time_us = r.value().exec_time_us;
      o.stdout_text = r.value().stdout_bytes;
      o.stderr_text = r.value().stderr_bytes;
      o.result_json = r.value().result_json;
      // The answers embed it as it is (JsonWriter::raw), and the cell's own code can write to the
      // agent's socket: what is not one JSON value becomes no result rather than a broken answer.
      if (!api::is_json_value(o.result_json)) {
        LOG_WARN("session %s: the sandbox's result is not JSON (%zu bytes); answered without it", identifier_.c_str(),
                 o.result_json.size());
        o.result_json.clear();
      }
      pool_->count_execution(o.status, o.exec_time_us);
    }
    done(o);
  });
}

ExecutionRecord& Session::new_execution(bool asynchronous) {
  if (executions_.size() >= kMaxExecutionsKept && executions_.front().done) {
    execution_bytes_ -= outcome_bytes(executions_.front().outcome);
    execution_index_.erase(executions_.front().id);
    executions_.pop_front();
  }
  executions_.emplace_back();
  ExecutionRecord& r = executions_.back();
  r.id = new_uuid();
  r.asynchronous = asynchronous;
  execution_index_[r.id] = &r;
  return r;
}

ExecutionRecord* Session::complete_execution(std::string_view id, const ExecOutcome& outcome) {
  ExecutionRecord* r = find_execution(id);
  if (!r || r->done) return r;
  r->done = true;
  r->outcome = outcome;
  execution_bytes_ += outcome_bytes(outcome);
  // Oldest finished records go first; the one just stored stays (it is being answered).
  while (execution_bytes_ > kMaxExecutionBytes && executions_.front().done && &executions_.front() != r) {
    execution_bytes_ -= outcome_bytes(executions_.front().outcome);
    execution_index_.erase(executions_.front().id);
    executions_.pop_front();
  }
  return r;
}

ExecutionRecord* Session::find_execution(std::string_view id) {
  auto it = execution_index_.find(std::string(id));
  return it == execution_index_.end() ? nullptr : it->second;
}

void Session::on_agent_hello(const agent::Hello& hello) {
  // A hello with a restart count means the interpreter restarted (timeout, crash, out of memory);
  // the execution it interrupted was already answered by the agent's supervisor.
  if (hello.restart_count == 0) return;
  // Debug level: code in the session can write hello frames on its own socket at will.
  LOG_DEBUG("session %s: interpreter restarted (%u)", identifier_.c_str(), hello.restart_count);
}

void Session::on_agent_lost(const Error& why) {
  conn_ = nullptr;  // the connection closes itself
  LOG_WARN("session %s: agent lost: %s", identifier_.c_str(), why.message().c_str());
  destroy("agent lost");
}

void Session::destroy(const char* reason) {
  if (state_ == SessionState::kDeleting) return;
  state_ = SessionState::kDeleting;
  LOG_DEBUG("session %s: ending (%s)", identifier_.c_str(), reason);
  pool_->timers().cancel(&cooldown_timer_);
  if (conn_) {
    AgentConn* c = conn_;
    conn_ = nullptr;
    c->close();  // pending callbacks run now, with ECANCELED
  }
  if (attachment_) attachment_->on_session_end();
  pool_->session_ended(this, std::move(sandbox_));  // frees this object later
}

}  // namespace sp::pool
