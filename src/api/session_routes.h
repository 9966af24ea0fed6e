// The session API of shared/API.md §2 (code interpreter): executions in both client families'
// shapes, sessions, listings, management calls and metadata, for every pool and for the default
// pool at the root. Route handlers only: allocation and execution are pool/.
// Loop thread only.
#pragma once

#include <string>
#include <vector>

#include "api/api.h"
#include "pool/pool_manager.h"

namespace sp::api {

struct SessionApiOptions {
  std::string metadata_json;  // the body of GET metadata, computed at start-up
};

void add_session_routes(Api& api, pool::PoolManager& pools, const SessionApiOptions& options);

// Constant-time comparison of a presented bearer token with each configured key.
bool token_matches(std::string_view authorization_header, const std::vector<std::string>& keys);
// Whether `req` may use the routes that need a key: none are configured, or its bearer token is one.
inline bool has_valid_key(const http::Request& req, const std::vector<std::string>& keys) {
  return keys.empty() || token_matches(req.header("authorization"), keys);
}

}  // namespace sp::api
