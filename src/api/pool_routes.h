// The management API for pools (shared/API.md §2, server routes): list, create, show, update,
// delete at run time. Loop thread only.
#pragma once

#include "api/api.h"
#include "pool/pool_manager.h"

namespace sp::api {

void add_pool_routes(Api& api, pool::PoolManager& pools);

}  // namespace sp::api
