// Api: routing a request head, dispatching the complete request, counting every response.
#include "api/api.h"

#include "api/errors.h"

namespace sp::api {

void Api::register_route(llhttp_method_t method, std::string pattern, RouteHandler handler, RouteOptions options) {
  int id = static_cast<int>(routes_.size());
  std::string label = llhttp_method_name(method);
  label += ' ';
  label += pattern;
  routes_.push_back({std::move(label), std::move(handler),
                     options.max_body_bytes ? options.max_body_bytes : default_max_body_bytes_,
                     std::move(options.body_limit), options.too_large_code, std::move(options.stream_head),
                     std::move(options.stream_body), std::move(options.stream_abort), options.open, {}, {}});
  router_.add(method, std::move(pattern), id);
}

void Api::register_fallback(std::string label, std::function<bool(const http::Request&)> claims, RouteHandler handler,
                            RouteOptions options) {
  fallback_id_ = static_cast<int>(routes_.size());
  fallback_claims_ = std::move(claims);
  routes_.push_back({std::move(label), std::move(handler),
                     options.max_body_bytes ? options.max_body_bytes : default_max_body_bytes_,
                     std::move(options.body_limit), options.too_large_code, std::move(options.stream_head),
                     std::move(options.stream_body), std::move(options.stream_abort), options.open, {}, {}});
}

void Api::respond_unauthorized(http::Exchange& ex) {
  respond_error(ex, 401, "Unauthorized", "a valid 'Authorization: Bearer <key>' header is required",
                "WWW-Authenticate: Bearer\r\n");
}

RouteParams Api::params_of(const http::Request& req) {
  RouteParams params;
  params.count = req.route_param_count;
  for (int i = 0; i < params.count; ++i) params.values[i] = req.route_params[i];
  return params;
}

http::HeadDecision Api::on_head(http::Exchange& ex) {
  http::Request& request = ex.request();
  Match m;
  if (fallback_claims_ && fallback_claims_(request)) {
    m.kind = MatchKind::kFound;
    m.id = fallback_id_;
  } else {
    m = router_.match(request.method, request.path);
  }
  if (m.kind == MatchKind::kFound) {
    request.route = m.id;
    request.route_param_count = m.params.count;
    for (int i = 0; i < m.params.count; ++i) request.route_params[i] = m.params.values[i];
    const RouteEntry& e = routes_[m.id];
    // Without a valid key the route never sees the request and no body is read: a body is answered
    // 401 at once (limit 0, on_protocol_error), before any `100 Continue`; none, in on_request.
    request.key_ok = e.open || !key_ok_ || key_ok_(request);
    if (!request.key_ok) return {0, true, false};
    uint64_t limit = e.body_limit ? e.body_limit(request) : e.max_body_bytes;
    if (e.stream_head) {
      e.stream_head(ex, m.params);
      return {limit, false, true};
    }
    return {limit, true, false};
  }
  // Unrouted requests are answered after their (discarded) body, up to the default limit.
  request.route = m.kind == MatchKind::kNotFound ? kRouteNotFound : kRouteBadMethod;
  return {default_max_body_bytes_, false, false};
}

void Api::on_body(http::Exchange& ex, std::string_view chunk) {
  int route = ex.request().route;
  if (route >= 0 && routes_[route].stream_body) routes_[route].stream_body(ex, chunk);
}

void Api::on_abort(http::Exchange& ex) {
  int route = ex.request().route;
  if (route >= 0 && routes_[route].stream_abort) routes_[route].stream_abort(ex);
}

void Api::on_request(http::Exchange& ex) {
  http::Request& req = ex.request();
  if (req.route >= 0 && !req.key_ok) return respond_unauthorized(ex);
  if (req.route >= 0) {
    routes_[req.route].handler(ex, params_of(req));
    return;
  }
  if (req.route == kRouteBadMethod) {
    Match m = router_.match(req.method, req.path);
    std::string allow = "Allow: " + m.allow + "\r\n";
    respond_error(ex, 405, "MethodNotAllowed", "method " + std::string(req.method_name) + " is not allowed here",
                  allow);
    return;
  }
  respond_error(ex, 404, "NotFound", "no route for " + std::string(req.path));
}

void Api::on_protocol_error(http::Exchange& ex, int status, const char* reason) {
  int route = ex.request().route;
  if (route >= 0 && !ex.request().key_ok) return respond_unauthorized(ex);
  if (status == 413 && route >= 0 && routes_[route].too_large_code) {
    respond_error(ex, status, routes_[route].too_large_code, reason);
    return;
  }
  respond_error(ex, status, error_code_for_status(status), reason);
}

Api::RouteEntry& Api::entry_for(int route) { return route >= 0 ? routes_[route] : unmatched_; }

void Api::on_response(const http::Request& request, int status, uint64_t latency_ns, size_t body_bytes) {
  RouteEntry& e = entry_for(request.route);
  bool counted = false;
  for (auto& [code, n] : e.by_status) {
    if (code == status) {
      ++n;
      counted = true;
      break;
    }
  }
  if (!counted) e.by_status.push_back({status, 1});
  e.latency.observe_ns(latency_ns);
  if (access_log_) access_log_->write(request, e.label, status, latency_ns, body_bytes);
}

void Api::render_metrics(std::string& out) const {
  for (const auto& section : metric_sections_) section(out);
  metric_header(out, "sandpool_http_requests_total", "counter", "HTTP requests answered, by route and status.");
  auto each = [&](const RouteEntry& e, auto&& fn) {
    std::string labels = "route=\"";
    append_label_value(labels, e.label);
    labels += '"';
    fn(e, labels);
  };
  auto all = [&](auto&& fn) {
    for (const RouteEntry& e : routes_) each(e, fn);
    each(unmatched_, fn);
  };
  all([&](const RouteEntry& e, const std::string& labels) {
    for (const auto& [code, n] : e.by_status) {
      metric_value(out, "sandpool_http_requests_total", labels + ",code=\"" + std::to_string(code) + "\"", n);
    }
  });
  metric_header(out, "sandpool_http_request_duration_seconds", "histogram",
                "Time from a request's complete head to its response, by route.");
  all([&](const RouteEntry& e, const std::string& labels) {
    if (e.latency.count() > 0) e.latency.render(out, "sandpool_http_request_duration_seconds", labels);
  });
}

}  // namespace sp::api
