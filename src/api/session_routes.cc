// Session API handlers: request parsing, allocation through the pool, and both response families.
#include "api/session_routes.h"

#include <simdjson.h>

#include <memory>

#include "api/errors.h"
#include "api/json.h"
#include "api/params.h"
#include "util/numbers.h"

namespace sp::api {
namespace {

using http::iequals;
using pool::AcquireError;
using pool::ExecOutcome;
using pool::ExecSpec;
using pool::Pool;
using pool::PoolManager;
using pool::Session;

constexpr const char* kJson = "application/json; charset=utf-8";
constexpr uint64_t kExecuteBodyLimit = 8ull << 20;
constexpr uint32_t kEnvelopeOutputLimit = 1u << 20;   // B family: no documented truncation
constexpr uint32_t kResourceOutputDefault = 4096;     // C family: outputStreamsMaxLength default
constexpr size_t kManagementPageSize = 300;

struct Ctx {
  PoolManager& pools;
  SessionApiOptions options;
};

// Where a route lives: under /pools/{pool}/ (params[0] is the pool) or at the root (default pool).
struct Where {
  bool pooled;
  int param_offset() const { return pooled ? 1 : 0; }
};

Pool* pool_of(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where) {
  std::string_view name = where.pooled ? params.values[0] : std::string_view("default");
  Pool* p = ctx.pools.find(name);
  if (!p) respond_error(ex, 404, "PoolNotFound", "no session pool named '" + std::string(name) + "'");
  return p;
}

std::optional<std::string> identifier_of(http::Exchange& ex) {
  auto id = query_param(ex.request().query, "identifier");
  if (!id) {
    respond_error(ex, 400, "InvalidIdentifier", "the query parameter 'identifier' is required");
    return std::nullopt;
  }
  if (!valid_identifier(*id)) {
    respond_error(ex, 400, "InvalidIdentifier",
                  "identifiers are 4 to 128 characters of A-Z a-z 0-9 and | - & ^ % $ # ( ) { } [ ] ; < > _ : . @ ~");
    return std::nullopt;
  }
  return id;
}

// The common start of a per-session route: the pool and the identifier, or an answer.
bool resolve(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where, Pool** pool,
             std::optional<std::string>* identifier) {
  *pool = pool_of(ctx, ex, params, where);
  if (!*pool) return false;
  *identifier = identifier_of(ex);
  return identifier->has_value();
}

void respond_acquire_error(http::Exchange& ex, const AcquireError& e) {
  respond_error(ex, e.status, e.code, e.message, e.retry_after_header());
}

// ---- request bodies ----

struct ExecBody {
  ExecSpec spec;
  bool asynchronous = false;
  bool has_code = false;
  uint32_t output_limit = 0;  // 0: the family's default
};

// The loop thread's parser for execution bodies, reused so that its buffers are not allocated
// and freed on every request. After a body larger than kKeptParserBytes it is replaced by a fresh
// one, so that one large cell does not keep megabytes allocated.
constexpr size_t kKeptParserBytes = 64 * 1024;

struct ReusedParser {
  simdjson::ondemand::parser& parser;
  ReusedParser() : parser(instance()) {}
  ~ReusedParser() {
    if (parser.capacity() > kKeptParserBytes) parser = simdjson::ondemand::parser{};
  }
  static simdjson::ondemand::parser& instance() {
    static thread_local simdjson::ondemand::parser p;
    return p;
  }
};

// Parses an execution request (either family, with or without the `properties` wrapper).
bool parse_exec_body(http::Exchange& ex, const pool::PoolSettings& settings, ExecBody* out) {
  const http::Request& req = ex.request();
  if (req.body.empty()) {
    respond_error(ex, 400, "InvalidRequestBody", "a JSON body with the code to run is required");
    return false;
  }
  ReusedParser reused;  // declared before the document: outlives every value read from it
  simdjson::ondemand::parser& parser = reused.parser;
  simdjson::padded_string_view view(req.body.data(), req.body.size(), req.body_capacity);
  simdjson::ondemand::document doc;
  simdjson::ondemand::object top;
  if (parser.iterate(view).get(doc) != simdjson::SUCCESS || doc.get_object().get(top) != simdjson::SUCCESS) {
    respond_error(ex, 400, "InvalidRequestBody", "the body must be a JSON object");
    return false;
  }
  double timeout_s = settings.default_execution_timeout_seconds;
  std::string error;
  auto visit = [&](simdjson::ondemand::object obj, int depth, auto&& self) -> bool {
    for (auto result : obj) {
      simdjson::ondemand::field field;
      std::string_view key;
      if (std::move(result).get(field) != simdjson::SUCCESS || field.unescaped_key().get(key) != simdjson::SUCCESS) {
        error = "malformed JSON";
        return false;
      }
      simdjson::ondemand::value v = field.value();
      std::string_view s;
      if (key == "properties" && depth == 0) {
        simdjson::ondemand::object inner;
        if (v.get_object().get(inner) != simdjson::SUCCESS) {
          error = "'properties' must be an object";
          return false;
        }
        if (!self(inner, 1, self)) return false;
      } else if (key == "code" || key == "pythonCode" || key == "shellCommand") {
        if (v.get_string().get(s) != simdjson::SUCCESS) {
          error = "'" + std::string(key) + "' must be a string";
          return false;
        }
        out->spec.code = std::string(s);
        out->has_code = true;
        if (key == "shellCommand") out->spec.mode = agent::ExecMode::kShell;
      } else if (key == "execCommandAndArgs") {
        simdjson::ondemand::array arr;
        if (v.get_array().get(arr) != simdjson::SUCCESS) {
          error = "'execCommandAndArgs' must be an array of strings";
          return false;
        }
        for (auto item : arr) {
          if (item.get_string().get(s) != simdjson::SUCCESS) {
            error = "'execCommandAndArgs' must be an array of strings";
            return false;
          }
          out->spec.argv.emplace_back(s);
        }
        if (out->spec.argv.empty() || out->spec.argv.size() > 4096) {
          error = "'execCommandAndArgs' needs 1 to 4096 strings";
          return false;
        }
        out->spec.mode = agent::ExecMode::kShell;
        out->has_code = true;
      } else if (key == "stdin") {
        if (v.get_string().get(s) != simdjson::SUCCESS) {
          error = "'stdin' must be a string";
          return false;
        }
        out->spec.stdin_bytes = std::string(s);
      } else if (key == "timeoutInSeconds") {
        if (v.get_double().get(timeout_s) != simdjson::SUCCESS || !(timeout_s > 0)) {
          error = "'timeoutInSeconds' must be a positive number";
          return false;
        }
      } else if (key == "executionType") {
        if (v.get_string().get(s) != simdjson::SUCCESS || !(iequals(s, "synchronous") || iequals(s, "asynchronous"))) {
          error = "'executionType' must be Synchronous or Asynchronous";
          return false;
        }
        out->asynchronous = iequals(s, "asynchronous");
      } else if (key == "codeInputType") {
        if (v.get_string().get(s) != simdjson::SUCCESS || !iequals(s, "inline")) {
          error = "'codeInputType' must be Inline";
          return false;
        }
      } else if (key == "outputStreamsMaxLength") {
        uint64_t n = 0;
        if (v.get_uint64().get(n) != simdjson::SUCCESS || n == 0 || n > kEnvelopeOutputLimit) {
          error = "'outputStreamsMaxLength' must be a whole number from 1 to 1048576";
          return false;
        }
        out->output_limit = static_cast<uint32_t>(n);
      }
      // Other fields (identifier, api-version, ...) are accepted and ignored.
    }
    return true;
  };
  if (!visit(top, 0, visit)) {
    respond_error(ex, 400, "InvalidRequestBody", error);
    return false;
  }
  if (!out->has_code || (out->spec.code.empty() && out->spec.argv.empty())) {
    respond_error(ex, 400, "InvalidRequestBody", "no code to run: give 'code' (or 'shellCommand' / 'execCommandAndArgs')");
    return false;
  }
  if (settings.container_type == pool::ContainerType::kShell) {
    out->spec.mode = agent::ExecMode::kShell;
  } else if (out->spec.mode == agent::ExecMode::kShell) {
    respond_error(ex, 400, "InvalidRequestBody", "shell commands need a Shell pool; this pool runs Python");
    return false;
  }
  double cap = settings.execution_timeout_cap_seconds;
  if (timeout_s > cap) timeout_s = cap;
  out->spec.timeout_ms = static_cast<uint32_t>(timeout_s * 1000);
  if (out->spec.timeout_ms == 0) out->spec.timeout_ms = 1;
  return true;
}

// ---- response bodies ----

const char* error_code_of(const ExecOutcome& o) {
  switch (o.status) {
    case agent::ExecStatus::kTimeout: return "ExecutionTimeout";
    case agent::ExecStatus::kOutOfMemory: return "OutOfMemory";
    case agent::ExecStatus::kCrashed: return "InterpreterCrashed";
    case agent::ExecStatus::kInterrupted: return "ExecutionInterrupted";
    default: return nullptr;
  }
}

std::string failure_note(const ExecOutcome& o, const ExecSpec& spec) {
  std::string note;
  switch (o.status) {
    case agent::ExecStatus::kTimeout:
      note = "ExecutionTimeout: the code ran past its " + std::to_string(spec.timeout_ms / 1000) + " s limit and was interrupted.";
      break;
    case agent::ExecStatus::kOutOfMemory:
      note = "OutOfMemory: the interpreter was killed for using more memory than the session allows.";
      break;
    case agent::ExecStatus::kCrashed:
      note = "InterpreterCrashed: the interpreter died while running the code.";
      break;
    default:
      return note;
  }
  if (o.flags & agent::kReplyVariablesLost) {
    note += " The interpreter was restarted: variables were lost; files in /mnt/data were kept.";
  }
  return note;
}

// A cell whose value is None answers "" (as a notebook shows nothing for None): the LlamaIndex
// client reads `result.type` whenever `result` is not a string, and fails on null.
std::string_view result_or_empty(const ExecOutcome& o) {
  if (o.result_json.empty() || o.result_json == "null") return "\"\"";
  return o.result_json;
}

bool python_success(const ExecOutcome& o) { return o.status == agent::ExecStatus::kSuccess; }

std::string stderr_with_note(const ExecOutcome& o, const ExecSpec& spec) {
  std::string err = o.stderr_text;
  std::string note = failure_note(o, spec);
  if (!note.empty()) {
    if (!err.empty() && err.back() != '\n') err += '\n';
    err += note;
  }
  return err;
}

// Envelope B (code/execute).
std::string envelope_b(const ExecOutcome& o, const ExecSpec& spec, bool shell) {
  std::string body;
  JsonWriter w(body);
  w.begin_object().key("$id").string("1").key("properties").begin_object();
  w.key("$id").string("2");
  bool ok = shell ? (o.status == agent::ExecStatus::kSuccess || o.status == agent::ExecStatus::kFailure)
                  : python_success(o);
  w.key("status").string(ok ? "Success" : "Failure");
  w.key("stdout").string(o.stdout_text);
  w.key("stderr").string(stderr_with_note(o, spec));
  std::string_view r = python_success(o) || shell ? result_or_empty(o) : std::string_view("\"\"");
  w.key("result").raw(r);
  w.key("executionResult").raw(r);
  w.key("executionTimeInMilliseconds").number_u(o.exec_time_us / 1000);
  if (shell) w.key("exitCode").number(static_cast<int64_t>(o.exit_code));
  if (const char* code = error_code_of(o)) w.key("errorCode").string(code);
  w.end_object().end_object();
  return body;
}

// The legacy python/execute body.
std::string legacy_body(const ExecOutcome& o, const ExecSpec& spec) {
  std::string body;
  JsonWriter w(body);
  w.begin_object();
  w.key("result").raw(python_success(o) ? result_or_empty(o) : std::string_view("\"\""));
  w.key("stdout").string(o.stdout_text);
  w.key("stderr").string(stderr_with_note(o, spec));
  w.end_object();
  return body;
}

std::string clip(std::string_view s, uint32_t limit) { return std::string(s.substr(0, limit)); }

// Resource C (executions).
std::string resource_c(const pool::ExecutionRecord& rec, const std::string& identifier, const ExecSpec* spec,
                       bool shell) {
  std::string body;
  JsonWriter w(body);
  w.begin_object();
  w.key("id").string(rec.id);
  w.key("identifier").string(identifier);
  w.key("sessionId").string(identifier);
  w.key("executionType").string(rec.asynchronous ? "Asynchronous" : "Synchronous");
  if (!rec.done) {
    w.key("status").string("Running");
    w.key("result").null();
    w.end_object();
    return body;
  }
  const ExecOutcome& o = rec.outcome;
  std::string status;
  if (shell) {
    status = std::to_string(o.exit_code);
  } else {
    status = python_success(o) ? "Succeeded" : "Failed";
  }
  w.key("status").string(status);
  w.key("result").begin_object();
  w.key("stdout").string(clip(o.stdout_text, rec.output_limit_bytes));
  std::string err = spec ? stderr_with_note(o, *spec) : o.stderr_text;
  w.key("stderr").string(clip(err, rec.output_limit_bytes));
  w.key("executionResult").raw(python_success(o) || shell ? result_or_empty(o) : std::string_view("\"\""));
  w.key("executionTimeInMilliseconds").number_u(o.exec_time_us / 1000);
  w.end_object();
  if (const char* code = error_code_of(o)) {
    w.key("error").begin_object().key("code").string(code).key("message").string(spec ? failure_note(o, *spec) : code).end_object();
  } else if (!shell && o.status == agent::ExecStatus::kFailure) {
    w.key("error").begin_object().key("code").string("ExecutionFailed").key("message").string(clip(o.stderr_text, 2048)).end_object();
  }
  w.end_object();
  return body;
}

void write_session_object(JsonWriter& w, const Session& s) {
  w.begin_object();
  w.key("identifier").string(s.identifier());
  w.key("createdAt").string(pool::format_iso8601_ms(s.created_unix_ms()));
  w.key("lastAccessedAt").string(pool::format_iso8601_ms(s.last_access_unix_ms()));
  std::string expires = pool::format_iso8601_ms(s.expires_unix_ms());
  w.key("expireAt").string(expires);
  w.key("expiresAt").string(expires);
  w.key("etag").string("\"" + std::to_string(s.sandbox_id()) + "-" + std::to_string(s.last_access_unix_ms()) + "\"");
  w.key("state").string(s.state() == pool::SessionState::kAllocated ? "Allocated" : "Deleting");
  w.end_object();
}

void respond_queue_full(http::Exchange& ex) {
  respond_error(ex, 429, "ExecutionQueueFull",
                "this session already has " + std::to_string(Session::kMaxQueuedExecutions) +
                    " executions waiting or running; retry when some have finished",
                "Retry-After: 1\r\n");
}

void respond_lost(http::Exchange& ex, const ExecOutcome& o) {
  if (o.refused) {
    respond_error(ex, 500, "ExecutionRefused", "the session's agent refused the execution (" + o.error.message() + ")");
    return;
  }
  if (o.error.code == ECANCELED) {
    respond_error(ex, kSessionEndedStatus, kSessionEnded,
                  "the session ended (deleted or stopped) before this execution was answered");
    return;
  }
  respond_error(ex, 500, "SessionLost", "the session's sandbox ended before answering (" + o.error.message() + ")");
}

// ---- handlers ----

enum class ExecShape { kEnvelope, kLegacy };

void handle_execute(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where, ExecShape shape) {
  Pool* p = nullptr;
  std::optional<std::string> id;
  if (!resolve(ctx, ex, params, where, &p, &id)) return;
  auto body = std::make_shared<ExecBody>();
  if (!parse_exec_body(ex, p->settings(), body.get())) return;
  body->spec.output_limit_bytes = kEnvelopeOutputLimit;
  bool shell = p->settings().container_type == pool::ContainerType::kShell;
  p->acquire(*id, [&ex, body, shape, shell](Session* s, const AcquireError* e) {
    if (e) return respond_acquire_error(ex, *e);
    if (s->execution_queue_full()) return respond_queue_full(ex);
    s->execute(body->spec, [&ex, body, shape, shell](const ExecOutcome& o) {
      if (!o.replied) return respond_lost(ex, o);
      ex.respond(200, kJson, shape == ExecShape::kEnvelope ? envelope_b(o, body->spec, shell) : legacy_body(o, body->spec));
    });
  });
}

// Percent-encodes what a query value cannot carry as is (identifiers may hold # & % ; and more).
std::string query_escape(std::string_view v) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : v) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                 c == '_' || c == '.' || c == '~';
    if (plain) {
      out += c;
    } else {
      out += '%';
      out += kHex[static_cast<unsigned char>(c) >> 4];
      out += kHex[static_cast<unsigned char>(c) & 15];
    }
  }
  return out;
}

std::string operation_headers(const pool::ExecutionRecord& rec, const std::string& identifier) {
  return "operation-id: " + rec.id + "\r\nOperation-Location: executions/" + rec.id + "?identifier=" +
         query_escape(identifier) + "\r\n";
}

void handle_executions_post(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where) {
  Pool* p = nullptr;
  std::optional<std::string> id;
  if (!resolve(ctx, ex, params, where, &p, &id)) return;
  auto body = std::make_shared<ExecBody>();
  if (!parse_exec_body(ex, p->settings(), body.get())) return;
  uint32_t limit = body->output_limit ? body->output_limit : kResourceOutputDefault;
  body->spec.output_limit_bytes = limit;
  bool shell = p->settings().container_type == pool::ContainerType::kShell;
  std::string identifier = *id;
  p->acquire(identifier, [&ex, body, shell, identifier, limit](Session* s, const AcquireError* e) {
    if (e) return respond_acquire_error(ex, *e);
    if (s->execution_queue_full()) return respond_queue_full(ex);
    pool::ExecutionRecord& rec = s->new_execution(body->asynchronous);
    rec.output_limit_bytes = limit;
    std::string rec_id = rec.id;
    if (body->asynchronous) {
      ex.respond(202, kJson, resource_c(rec, identifier, &body->spec, shell), operation_headers(rec, identifier));
      s->execute(body->spec, [s, rec_id](const ExecOutcome& o) {
        ExecOutcome stored = o;
        if (!o.replied) {
          stored.status = agent::ExecStatus::kCrashed;
          stored.stderr_text = "the session's sandbox ended: " + o.error.message();
        }
        s->complete_execution(rec_id, stored);
      });
      return;
    }
    s->execute(body->spec, [&ex, s, body, shell, identifier, rec_id](const ExecOutcome& o) {
      if (!o.replied) return respond_lost(ex, o);
      pool::ExecutionRecord* r = s->complete_execution(rec_id, o);
      if (!r) return respond_error(ex, 500, "InternalError", "execution record lost");
      ex.respond(200, kJson, resource_c(*r, identifier, &body->spec, shell), operation_headers(*r, identifier));
    });
  });
}

void handle_execution_get(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where) {
  Pool* p = nullptr;
  std::optional<std::string> id;
  if (!resolve(ctx, ex, params, where, &p, &id)) return;
  Session* s = p->find(*id);
  std::string_view exec_id = params.values[where.param_offset()];
  pool::ExecutionRecord* rec = s ? s->find_execution(exec_id) : nullptr;
  if (!rec) {
    respond_error(ex, 404, "ExecutionNotFound", "no execution " + std::string(exec_id) + " in session " + *id);
    return;
  }
  s->touch();
  bool shell = p->settings().container_type == pool::ContainerType::kShell;
  ex.respond(200, kJson, resource_c(*rec, *id, nullptr, shell), operation_headers(*rec, *id));
}

void handle_session_get(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where) {
  Pool* p = nullptr;
  std::optional<std::string> id;
  if (!resolve(ctx, ex, params, where, &p, &id)) return;
  Session* s = p->find(*id);
  if (!s) return respond_error(ex, 404, "SessionNotFound", "no session " + *id + " in pool " + p->settings().name);
  std::string body;
  JsonWriter w(body);
  write_session_object(w, *s);
  ex.respond(200, kJson, body);
}

void handle_session_delete(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where, bool management) {
  Pool* p = nullptr;
  std::optional<std::string> id;
  if (!resolve(ctx, ex, params, where, &p, &id)) return;
  Session* s = p->find(*id);
  if (!s) return respond_error(ex, 404, "SessionNotFound", "no session " + *id + " in pool " + p->settings().name);
  s->destroy(management ? "stopSession" : "deleted");
  if (management) {
    ex.respond(200, "text/plain; charset=utf-8", "Session " + *id + " in session pool " + p->settings().name + " stopped.");
  } else {
    ex.respond(204, {}, {});
  }
}

// ?skip=N: how many sessions of the listing to leave out (0 when absent); nullopt, with the
// error answered, when it is not a whole number.
std::optional<uint64_t> skip_param(http::Exchange& ex) {
  auto skip = query_param(ex.request().query, "skip");
  if (!skip) return 0;
  auto n = parse_whole<uint64_t>(*skip);
  if (!n) respond_error(ex, 400, "InvalidQueryParameter", "skip must be a whole number, got '" + *skip + "'");
  return n;
}

void handle_list_sessions(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where, bool management) {
  Pool* p = pool_of(ctx, ex, params, where);
  if (!p) return;
  std::optional<uint64_t> skip = skip_param(ex);
  if (!skip) return;
  std::vector<Session*> all = p->sessions_by_age();
  // Past the end is an empty page, never a wrap-around (skip + page size near 2^64).
  const size_t start = static_cast<size_t>(std::min<uint64_t>(*skip, all.size()));
  const size_t end = management ? start + std::min(all.size() - start, kManagementPageSize) : all.size();
  std::string body;
  JsonWriter w(body);
  w.begin_object();
  w.key(management ? "value" : "sessions").begin_array();
  for (size_t i = start; i < end; ++i) write_session_object(w, *all[i]);
  w.end_array();
  if (management) {
    w.key("count").number_u(all.size());
    if (end < all.size()) {
      std::string host(ex.request().header("host"));
      w.key("nextLink").string("http://" + host + std::string(ex.request().path) + "?skip=" + std::to_string(end));
    } else {
      w.key("nextLink").null();
    }
  } else {
    w.key("nextLink").null();
  }
  w.end_object();
  ex.respond(200, kJson, body);
}

void handle_metadata(Ctx& ctx, http::Exchange& ex, const RouteParams& params, Where where) {
  if (!pool_of(ctx, ex, params, where)) return;
  ex.respond(200, kJson, ctx.options.metadata_json);
}

}  // namespace

bool token_matches(std::string_view authorization, const std::vector<std::string>& keys) {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() || !iequals(authorization.substr(0, kBearer.size()), kBearer)) return false;
  std::string_view token = authorization.substr(kBearer.size());
  bool any = false;
  for (const std::string& key : keys) {
    // Constant time in the token's content: every byte of the longer string is visited.
    size_t n = std::max(key.size(), token.size());
    unsigned char diff = key.size() == token.size() ? 0 : 1;
    for (size_t i = 0; i < n; ++i) {
      unsigned char a = i < key.size() ? static_cast<unsigned char>(key[i]) : 0;
      unsigned char b = i < token.size() ? static_cast<unsigned char>(token[i]) : 0;
      diff |= static_cast<unsigned char>(a ^ b);
    }
    any |= diff == 0;
  }
  return any;
}

void add_session_routes(Api& api, PoolManager& pools, const SessionApiOptions& options) {
  auto ctx = std::make_shared<Ctx>(Ctx{pools, options});
  RouteOptions exec_opts{kExecuteBodyLimit, {}, nullptr, {}, {}, {}};
  for (Where where : {Where{true}, Where{false}}) {
    std::string base = where.pooled ? "/pools/{pool}/" : "/";
    auto reg = [&](llhttp_method_t m, const char* suffix, auto fn, RouteOptions o = {}) {
      api.register_route(m, base + suffix, [ctx, where, fn](http::Exchange& ex, const RouteParams& p) { fn(*ctx, ex, p, where); }, o);
    };
    reg(HTTP_POST, "code/execute", [](Ctx& c, http::Exchange& ex, const RouteParams& p, Where w) { handle_execute(c, ex, p, w, ExecShape::kEnvelope); }, exec_opts);
    reg(HTTP_POST, "execute", [](Ctx& c, http::Exchange& ex, const RouteParams& p, Where w) { handle_execute(c, ex, p, w, ExecShape::kEnvelope); }, exec_opts);
    reg(HTTP_POST, "python/execute", [](Ctx& c, http::Exchange& ex, const RouteParams& p, Where w) { handle_execute(c, ex, p, w, ExecShape::kLegacy); }, exec_opts);
    reg(HTTP_POST, "executions", handle_executions_post, exec_opts);
    reg(HTTP_GET, "executions/{id}", handle_execution_get);
    reg(HTTP_GET, "session", handle_session_get);
    reg(HTTP_DELETE, "session", [](Ctx& c, http::Exchange& ex, const RouteParams& p, Where w) { handle_session_delete(c, ex, p, w, false); });
    reg(HTTP_GET, "listSessions", [](Ctx& c, http::Exchange& ex, const RouteParams& p, Where w) { handle_list_sessions(c, ex, p, w, false); });
    reg(HTTP_POST, ".management/getSession", handle_session_get);
    reg(HTTP_POST, ".management/listSessions", [](Ctx& c, http::Exchange& ex, const RouteParams& p, Where w) { handle_list_sessions(c, ex, p, w, true); });
    reg(HTTP_POST, ".management/stopSession", [](Ctx& c, http::Exchange& ex, const RouteParams& p, Where w) { handle_session_delete(c, ex, p, w, true); });
    reg(HTTP_GET, "metadata", handle_metadata);
  }
}

}  // namespace sp::api
