// Router matching: a linear scan over a table of a few dozen patterns.
#include "api/router.h"

namespace sp::api {

void Router::add(llhttp_method_t method, std::string pattern, int id) {
  routes_.push_back({method, std::move(pattern), id});
}

bool Router::match_pattern(std::string_view pattern, std::string_view path, RouteParams* params) {
  params->count = 0;
  if (pattern.empty() || path.empty() || pattern[0] != '/' || path[0] != '/') return false;
  pattern.remove_prefix(1);
  path.remove_prefix(1);
  while (true) {
    size_t ps = pattern.find('/');
    std::string_view pseg = pattern.substr(0, ps);
    if (pseg.size() > 5 && pseg.front() == '{' && pseg.substr(pseg.size() - 4) == "...}") {
      if (path.empty() || params->count >= kMaxRouteParams) return false;
      params->values[params->count++] = path;  // the rest, slashes included
      return true;
    }
    size_t qs = path.find('/');
    std::string_view seg = path.substr(0, qs);
    if (pseg.size() >= 2 && pseg.front() == '{' && pseg.back() == '}') {
      if (seg.empty() || params->count >= kMaxRouteParams) return false;
      params->values[params->count++] = seg;
    } else if (pseg != seg) {
      return false;
    }
    bool pattern_done = ps == std::string_view::npos;
    bool path_done = qs == std::string_view::npos;
    if (pattern_done || path_done) return pattern_done && path_done;
    pattern.remove_prefix(ps + 1);
    path.remove_prefix(qs + 1);
  }
}

Match Router::match(llhttp_method_t method, std::string_view path) const {
  Match m;
  RouteParams params;
  bool seen[64] = {};
  for (const RouteSpec& r : routes_) {
    if (!match_pattern(r.pattern, path, &params)) continue;
    if (r.method == method || (method == HTTP_HEAD && r.method == HTTP_GET)) {
      m.kind = MatchKind::kFound;
      m.id = r.id;
      m.params = params;
      m.allow.clear();
      return m;
    }
    m.kind = MatchKind::kMethodNotAllowed;
    if (r.method < 64 && !seen[r.method]) {
      seen[r.method] = true;
      if (!m.allow.empty()) m.allow += ", ";
      m.allow += llhttp_method_name(r.method);
      if (r.method == HTTP_GET && !seen[HTTP_HEAD]) {
        seen[HTTP_HEAD] = true;
        m.allow += ", HEAD";
      }
    }
  }
  return m;
}

}  // namespace sp::api
