// The forwarding route: claims custom-container requests, resolves their session, hands them to the proxy.
#include "api/proxy_routes.h"

#include <unordered_map>

#include "api/errors.h"
#include "api/params.h"
#include "api/session_routes.h"

namespace sp::api {
namespace {

constexpr std::string_view kPoolsPrefix = "/pools/";

// "/pools/<name>/<rest>" → name and "/<rest>"; false for other paths, "/pools/<name>" included (the
// pools API's own route).
bool split_pool_path(std::string_view path, std::string_view* name, std::string_view* rest) {
  if (path.substr(0, kPoolsPrefix.size()) != kPoolsPrefix) return false;
  std::string_view tail = path.substr(kPoolsPrefix.size());
  size_t slash = tail.find('/');
  if (slash == std::string_view::npos || slash == 0) return false;
  *name = tail.substr(0, slash);
  *rest = tail.substr(slash);
  return true;
}

// A request whose session is not bound yet: it waits for allocation, or holds the error to answer
// once its body has arrived (an exchange is answerable only then).
struct Pending {
  uint64_t generation = 0;
  bool waiting = false;        // acquire() has not called back
  bool request_done = false;   // the handler (whole request received) already ran
  int status = 0;
  std::string code, message, headers;
  std::string body;            // body bytes read while waiting
  std::string target;
};

// The pool found by the route's `claims` for the request being routed. Api::on_head calls claims,
// body_limit and stream_head one after the other for one request: the pool is looked up once.
struct Claim {
  const http::Request* request = nullptr;
  pool::Pool* pool = nullptr;
  std::string_view rest;
};

struct Ctx {
  pool::PoolManager& pools;
  ProxyRouteOptions options;
  std::shared_ptr<proxy::Proxy> proxy;
  std::unordered_map<http::Exchange*, Pending> pending;
  uint64_t next_generation = 1;
  Claim claim;
};

pool::Pool* container_pool_of(Ctx& ctx, const http::Request& req, std::string_view* rest) {
  std::string_view name;
  if (!split_pool_path(req.path, &name, rest)) return nullptr;
  pool::Pool* p = ctx.pools.find(name);
  if (!p || !p->is_container_pool()) return nullptr;
  if (rest->substr(0, 13) == "/.management/") return nullptr;
  return p;
}

bool claims(Ctx& ctx, const http::Request& req) {
  std::string_view rest;
  pool::Pool* p = container_pool_of(ctx, req, &rest);
  ctx.claim = p ? Claim{&req, p, rest} : Claim{};
  return p != nullptr;
}

// The claimed pool of `req` (looked up again when the claim was for another request).
pool::Pool* claimed_pool(Ctx& ctx, const http::Request& req, std::string_view* rest) {
  if (ctx.claim.request != &req) return container_pool_of(ctx, req, rest);
  *rest = ctx.claim.rest;
  return ctx.claim.pool;
}

void answer(http::Exchange& ex, const Pending& p) { respond_error(ex, p.status, p.code, p.message, p.headers); }

// Holds an error to answer once the request's body has arrived.
void refuse(Ctx& ctx, http::Exchange& ex, int status, const char* code, const char* message,
            const char* headers = "") {
  Pending& p = ctx.pending[&ex];
  p = Pending{};
  p.generation = ctx.next_generation++;
  p.status = status;
  p.code = code;
  p.message = message;
  p.headers = headers;
}

void stream_head(Ctx& ctx, http::Exchange& ex) {
  const http::Request& req = ex.request();
  std::string_view rest;
  pool::Pool* pool = claimed_pool(ctx, req, &rest);
  ctx.claim = Claim{};
  auto id = query_param(req.query, "identifier");
  if (!pool) {
    refuse(ctx, ex, 404, "PoolNotFound", "the session pool went away");
    return;
  }
  if (!id || !valid_identifier(*id)) {
    refuse(ctx, ex, 400, "InvalidIdentifier",
           !id ? "the query parameter 'identifier' is required"
               : "identifiers are 4 to 128 characters of A-Z a-z 0-9 and | - & ^ % $ # ( ) { } [ ] ; < > _ : . @ ~");
    return;
  }
  // "/<rest>?<query>" as the client wrote it: the query follows the path in the request head.
  std::string_view target = rest;
  if (!req.query.empty()) target = std::string_view(rest.data(), req.query.data() + req.query.size() - rest.data());
  if (pool::Session* session = pool->reuse(*id)) {
    // The usual case, a session already bound: forward now, keeping no state here.
    ctx.proxy->start(ex, session, target);
    return;
  }
  Pending& p = ctx.pending[&ex];
  p = Pending{};
  p.generation = ctx.next_generation++;
  p.target = target;
  p.waiting = true;
  uint64_t generation = p.generation;
  http::Exchange* exp = &ex;
  pool->acquire(*id, [&ctx, exp, generation](pool::Session* session, const pool::AcquireError* error) {
    auto it = ctx.pending.find(exp);
    if (it == ctx.pending.end() || it->second.generation != generation) return;  // the client went away
    Pending& pe = it->second;
    pe.waiting = false;
    if (error) {
      pe.status = error->status;
      pe.code = error->code;
      pe.message = error->message;
      pe.headers = error->retry_after_header();
      exp->resume_body();  // read and discard the rest, then answer
      if (pe.request_done) {
        Pending copy = std::move(pe);
        ctx.pending.erase(it);
        answer(*exp, copy);
      }
      return;
    }
    Pending ready = std::move(pe);
    ctx.pending.erase(it);
    exp->resume_body();
    ctx.proxy->start(*exp, session, ready.target);
    if (!ready.body.empty()) ctx.proxy->body(*exp, ready.body);
    if (ready.request_done) ctx.proxy->request_complete(*exp);
  });
  // Still waiting for a sandbox: the body is not read until the session is bound. (Pausing only
  // now spares the client connection a stop and restart of its reads when acquire() answered.)
  auto it = ctx.pending.find(&ex);
  if (it != ctx.pending.end() && it->second.generation == generation && it->second.waiting) ex.pause_body();
}

void stream_body(Ctx& ctx, http::Exchange& ex, std::string_view chunk) {
  if (ctx.proxy->forwarding(ex)) {
    ctx.proxy->body(ex, chunk);
    return;
  }
  auto it = ctx.pending.find(&ex);
  if (it != ctx.pending.end() && it->second.waiting) it->second.body.append(chunk);  // bounded: reading is paused
}

void stream_abort(Ctx& ctx, http::Exchange& ex) {
  if (ctx.proxy->forwarding(ex)) {
    ctx.proxy->abort(ex);
    return;
  }
  ctx.pending.erase(&ex);
}

void on_request(Ctx& ctx, http::Exchange& ex) {
  if (ctx.proxy->forwarding(ex)) {
    ctx.proxy->request_complete(ex);
    return;
  }
  auto it = ctx.pending.find(&ex);
  if (it == ctx.pending.end()) {
    respond_error(ex, 500, "InternalError", "the forwarded request lost its state");
    return;
  }
  if (it->second.waiting) {
    it->second.request_done = true;  // answered when allocation calls back
    return;
  }
  Pending copy = std::move(it->second);
  ctx.pending.erase(it);
  answer(ex, copy);
}

}  // namespace

std::shared_ptr<proxy::Proxy> add_proxy_routes(Api& api, pool::PoolManager& pools, uv_loop_t* loop,
                                               const ProxyRouteOptions& options) {
  proxy::ProxyOptions po;
  po.strip_authorization = options.strip_authorization;
  auto ctx = std::make_shared<Ctx>(Ctx{pools, options, std::make_shared<proxy::Proxy>(loop, po), {}, 1, {}});
  RouteOptions o;
  o.body_limit = [ctx](const http::Request& req) -> uint64_t {
    std::string_view rest;
    pool::Pool* p = claimed_pool(*ctx, req, &rest);
    return p ? p->settings().max_upload_bytes : 0;
  };
  o.stream_head = [ctx](http::Exchange& ex, const RouteParams&) { stream_head(*ctx, ex); };
  o.stream_body = [ctx](http::Exchange& ex, std::string_view chunk) { stream_body(*ctx, ex, chunk); };
  o.stream_abort = [ctx](http::Exchange& ex) { stream_abort(*ctx, ex); };
  api.register_fallback(
      "ANY /pools/{pool}/{path...} (custom container)",
      [ctx](const http::Request& req) { return claims(*ctx, req); },
      [ctx](http::Exchange& ex, const RouteParams&) { on_request(*ctx, ex); }, std::move(o));
  std::weak_ptr<proxy::Proxy> weak = ctx->proxy;
  api.add_metrics([weak](std::string& out) {
    if (auto p = weak.lock()) p->render_metrics(out);
  });
  return ctx->proxy;
}

}  // namespace sp::api
