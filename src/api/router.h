// Router: a flat table of (method, path pattern) → route id, matched in table order.
// Patterns are '/'-separated: literal segments, `{name}` for one segment, `{name...}` (last) for the
// rest of the path. Paths are matched as sent (percent-encoding intact); handlers decode parameters.
// A GET route also answers HEAD. Not thread-safe: built at start-up, read on the loop thread.
#pragma once

#include <llhttp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sp::api {

inline constexpr int kMaxRouteParams = 4;  // = the room in http::Request::route_params

struct RouteParams {
  std::string_view values[kMaxRouteParams];
  int count = 0;
};

struct RouteSpec {
  llhttp_method_t method;
  std::string pattern;
  int id;  // caller's identifier, returned on a match
};

enum class MatchKind { kFound, kNotFound, kMethodNotAllowed };

struct Match {
  MatchKind kind = MatchKind::kNotFound;
  int id = -1;
  RouteParams params;
  std::string allow;  // for kMethodNotAllowed: "GET, HEAD, POST"
};

class Router {
 public:
  void add(llhttp_method_t method, std::string pattern, int id);
  Match match(llhttp_method_t method, std::string_view path) const;
  const std::vector<RouteSpec>& routes() const { return routes_; }

 private:
  static bool match_pattern(std::string_view pattern, std::string_view path, RouteParams* params);
  std::vector<RouteSpec> routes_;
};

}  // namespace sp::api
