// Forwarding for custom-container pools (API.md §2, last row): every request under
// /pools/<pool>/ of a CustomContainer pool, except its .management/ calls, goes to the session's
// container. Authentication, the identifier and allocation here; the forwarding is proxy/.
// Loop thread only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "api/api.h"
#include "pool/pool_manager.h"
#include "proxy/proxy.h"

namespace sp::api {

struct ProxyRouteOptions {
  // API keys are set (Api checks them): the Authorization header stays with us, not forwarded.
  bool strip_authorization = false;
};

// Registers the fallback route and the proxy's metrics. The returned object must outlive `api`'s
// use (the server keeps it) and be destroyed after the pools have stopped.
std::shared_ptr<proxy::Proxy> add_proxy_routes(Api& api, pool::PoolManager& pools, uv_loop_t* loop,
                                               const ProxyRouteOptions& options);

}  // namespace sp::api
