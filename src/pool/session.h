// Session: one identifier bound to one sandbox: its agent connection, cooldown, executions and
// file operations. Not the HTTP shapes (api/session_routes) and not allocation (pool.h).
//
// Threading: loop thread only. Ownership: its Pool owns it; destroy() ends the sandbox and the Pool
// frees the object. Every callback given to a session is called exactly once, also when the
// session ends first (then with an error).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/protocol.h"
#include "pool/agent_conn.h"
#include "pool/owned_timer.h"
#include "pool/sandbox_source.h"
#include "pool/timer_wheel.h"

namespace sp::pool {

class Pool;

enum class SessionState { kAllocated, kDeleting };

struct ExecSpec {
  agent::ExecMode mode = agent::ExecMode::kPython;
  std::string code;
  std::vector<std::string> argv;
  std::string stdin_bytes;
  uint32_t timeout_ms = 120000;
  uint32_t output_limit_bytes = 1u << 20;
};

struct ExecOutcome {
  bool replied = false;  // false: no execute reply; `error` says why
  bool refused = false;  // the agent answered with an error (the sandbox lives on)
  Error error;
  agent::ExecStatus status = agent::ExecStatus::kSuccess;
  uint8_t flags = 0;
  int32_t exit_code = 0;
  uint64_t exec_time_us = 0;
  std::string stdout_text;
  std::string stderr_text;
  std::string result_json;
};

// An execution kept for the `executions` API (API.md §3 C): finished ones are kept for the session's life.
struct ExecutionRecord {
  std::string id;  // uuid
  bool asynchronous = false;
  bool done = false;
  ExecOutcome outcome;
  uint32_t output_limit_bytes = 4096;
};

// Per-session state another layer keeps (the proxy's upstream connections); told when the session
// ends so it can let go of the sandbox's resources at once.
class SessionAttachment {
 public:
  virtual ~SessionAttachment() = default;
  virtual void on_session_end() = 0;
};

class Session : public AgentConn::Listener {
 public:
  using ExecFn = std::function<void(const ExecOutcome& outcome)>;

  Session(Pool* pool, std::string identifier, Sandbox&& sandbox, int64_t now_unix_ms);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() override;

  Status start(uv_loop_t* loop);

  const std::string& identifier() const { return identifier_; }
  SessionState state() const { return state_; }
  Pool* pool() const { return pool_; }
  int64_t created_unix_ms() const { return created_unix_ms_; }
  int64_t last_access_unix_ms() const { return last_access_unix_ms_; }
  int64_t expires_unix_ms() const;
  uint64_t sandbox_id() const { return sandbox_.id; }

  // Every request naming the session resets its cooldown.
  void touch();
  // Runs one execution; executions run one at a time, in arrival order (the agent reads its socket
  // in order). `done` is called once with the outcome.
  void execute(ExecSpec spec, ExecFn done);
  // Sends an encoded file-operation frame (built with next_request_id()) and routes its reply.
  uint64_t next_request_id();
  void agent_request(std::string_view frame, uint64_t id, AgentConn::ReplyFn on_reply);
  size_t agent_pending_output() const;
  bool busy() const { return busy_ > 0; }
  // Custom containers: a proxied request is in flight (the cooldown waits for it) / is over.
  void begin_request();
  void end_request();
  const Sandbox& sandbox() const { return sandbox_; }
  SessionAttachment* attachment() const { return attachment_.get(); }
  void set_attachment(std::unique_ptr<SessionAttachment> a) { attachment_ = std::move(a); }
  // Executions waiting or running in this session are bounded (asynchronous ones answer at once,
  // so nothing else limits them): past kMaxQueuedExecutions a new one is refused.
  static constexpr uint32_t kMaxQueuedExecutions = 64;
  bool execution_queue_full() const { return queued_executions_ >= kMaxQueuedExecutions; }

  ExecutionRecord& new_execution(bool asynchronous);
  ExecutionRecord* find_execution(std::string_view id);
  // Stores the outcome of execution `id` (if still kept) and evicts the oldest finished records
  // past the session's byte budget. Returns the record, or nullptr when it is gone.
  ExecutionRecord* complete_execution(std::string_view id, const ExecOutcome& outcome);

  // Ends the session now: pending callbacks get errors, the sandbox goes to the reaper, the pool
  // forgets the identifier. `reason` is for the log.
  void destroy(const char* reason);

  // AgentConn::Listener
  void on_agent_hello(const agent::Hello& hello) override;
  void on_agent_lost(const Error& why) override;

  OwnedTimer<Session> cooldown_timer_;

 private:
  static void on_cooldown(TimerEntry* e, uint64_t now_ms);
  bool timed() const;

  Pool* pool_;
  std::string identifier_;
  Sandbox sandbox_;
  AgentConn* conn_ = nullptr;
  SessionState state_ = SessionState::kAllocated;
  int64_t created_unix_ms_;
  int64_t last_access_unix_ms_;
  uint32_t busy_ = 0;  // requests to the agent not yet answered: the cooldown waits for them
  uint32_t queued_executions_ = 0;
  std::deque<ExecutionRecord> executions_;  // oldest first, bounded in count and bytes
  size_t execution_bytes_ = 0;
  std::unordered_map<std::string, ExecutionRecord*> execution_index_;
  std::unique_ptr<SessionAttachment> attachment_;
};

int64_t unix_now_ms();
std::string format_iso8601_ms(int64_t unix_ms);  // "2026-01-02T03:04:05.678Z"
std::string new_uuid();

}  // namespace sp::pool
