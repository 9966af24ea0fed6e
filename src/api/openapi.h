// GET /openapi.json: an OpenAPI 3.0 description generated from the live route table, so it lists
// every route the server really serves. Loop thread only.
#pragma once

#include "api/api.h"

namespace sp::api {

// Registers /openapi.json; call after every other route is registered.
void add_openapi_route(Api& api);

}  // namespace sp::api
