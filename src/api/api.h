// Api: the RequestHandler behind the HTTP server: route table, per-route metrics, access log.
// Components register routes at start-up (register_route) and metrics sections (add_metrics);
// after that everything runs on the loop thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "api/access_log.h"
#include "api/router.h"
#include "http/handler.h"
#include "util/metrics.h"

namespace sp::api {

class Api;
using RouteHandler = std::function<void(http::Exchange& ex, const RouteParams& params)>;

struct RouteOptions {
  uint64_t max_body_bytes = 0;  // 0: the server's default body limit
  // When set, decides the limit per request from its head (e.g. by the pool in the path).
  std::function<uint64_t(const http::Request&)> body_limit;
  const char* too_large_code = nullptr;  // the error code of a 413 (default "PayloadTooLarge")
  // Streamed bodies: when set, the body is not stored; these receive it as it arrives and the
  // route's handler is called at its end. `stream_abort` runs when the request ends early.
  std::function<void(http::Exchange&, const RouteParams&)> stream_head;
  std::function<void(http::Exchange&, std::string_view)> stream_body;
  std::function<void(http::Exchange&)> stream_abort;
  // Answers without an API key (health, readiness, metrics, the OpenAPI document).
  bool open = false;
};

class Api : public http::RequestHandler {
 public:
  explicit Api(uint64_t default_max_body_bytes) : default_max_body_bytes_(default_max_body_bytes) {}

  void register_route(llhttp_method_t method, std::string pattern, RouteHandler handler, RouteOptions options = {});
  // A route consulted before the table: a request for which `claims` is true goes to it whatever its
  // method and path (custom-container pools forward every path but their .management/ calls).
  void register_fallback(std::string label, std::function<bool(const http::Request&)> claims, RouteHandler handler,
                         RouteOptions options);
  bool has_fallback() const { return fallback_id_ >= 0; }
  // A section of /metrics, rendered on each scrape.
  void add_metrics(std::function<void(std::string& out)> render) { metric_sections_.push_back(std::move(render)); }
  void render_metrics(std::string& out) const;
  void set_access_log(AccessLog* log) { access_log_ = log; }
  // Whether a request carries a valid API key (or none are configured). The one key check: a
  // request to a route that is not `open` without one is answered 401 here, before its route sees
  // it and before any byte of its body is read (API.md §1: the key comes first).
  void set_key_check(std::function<bool(const http::Request&)> ok) { key_ok_ = std::move(ok); }
  const Router& router() const { return router_; }

  // http::RequestHandler
  http::HeadDecision on_head(http::Exchange& ex) override;
  void on_body(http::Exchange& ex, std::string_view chunk) override;
  void on_abort(http::Exchange& ex) override;
  void on_request(http::Exchange& ex) override;
  void on_protocol_error(http::Exchange& ex, int status, const char* reason) override;
  void on_response(const http::Request& request, int status, uint64_t latency_ns, size_t body_bytes) override;

 private:
  struct RouteEntry {
    std::string label;  // "GET /healthz"
    RouteHandler handler;
    uint64_t max_body_bytes;
    std::function<uint64_t(const http::Request&)> body_limit;
    const char* too_large_code;
    std::function<void(http::Exchange&, const RouteParams&)> stream_head;
    std::function<void(http::Exchange&, std::string_view)> stream_body;
    std::function<void(http::Exchange&)> stream_abort;
    bool open;
    std::vector<std::pair<int, uint64_t>> by_status;  // status → requests
    LatencyHistogram latency;
  };
  static constexpr int kRouteNotFound = -2;
  static constexpr int kRouteBadMethod = -3;

  RouteEntry& entry_for(int route);
  static RouteParams params_of(const http::Request& req);
  static void respond_unauthorized(http::Exchange& ex);
  uint64_t default_max_body_bytes_;
  Router router_;
  std::vector<RouteEntry> routes_;
  std::function<bool(const http::Request&)> fallback_claims_;
  int fallback_id_ = -1;
  std::function<bool(const http::Request&)> key_ok_;
  RouteEntry unmatched_{"unmatched", {}, 0, {}, nullptr, {}, {}, {}, true, {}, {}};
  std::vector<std::function<void(std::string&)>> metric_sections_;
  AccessLog* access_log_ = nullptr;
};

}  // namespace sp::api
