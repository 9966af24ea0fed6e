// GET/POST /pools, GET/PUT/PATCH/DELETE /pools/{pool}.
#include "api/pool_routes.h"

#include "api/errors.h"
#include "api/json.h"

namespace sp::api {
namespace {

constexpr const char* kJson = "application/json; charset=utf-8";

std::string pool_json(pool::Pool& p) {
  std::string out = pool::settings_to_json(p.settings());
  // Add live figures next to the settings.
  out.pop_back();
  out += ",\"allocatedSessions\":" + std::to_string(p.allocated()) + ",\"provisioningState\":\"Succeeded\"}";
  return out;
}

// A pool whose creation is under way (its POST not answered yet): Azure's provisioningState.
std::string creating_json(const pool::PoolSettings& s) {
  std::string out = pool::settings_to_json(s);
  out.pop_back();
  out += ",\"allocatedSessions\":0,\"provisioningState\":\"InProgress\"}";
  return out;
}

void respond_create_error(http::Exchange& ex, const Status& st, const std::string& msg) {
  switch (st.error().code) {
    case kETooLarge: return respond_error(ex, 409, "TooManyPools", msg);
    case EEXIST: return respond_error(ex, 409, "PoolExists", msg);
    case pool::kPoolDeleted: return respond_error(ex, 409, "PoolDeleted", msg);
    case pool::kPoolShutdown: return respond_error(ex, 503, "ServiceUnavailable", msg);
    case kEInvalid: return respond_error(ex, 400, "InvalidPoolSettings", msg);
    default: return respond_error(ex, 500, "PoolStartFailed", msg);
  }
}

}  // namespace

void add_pool_routes(Api& api, pool::PoolManager& pools) {
  api.register_route(HTTP_GET, "/pools", [&pools](http::Exchange& ex, const RouteParams&) {
    std::string body;
    JsonWriter w(body);
    w.begin_object().key("value").begin_array();
    for (const auto& [name, p] : pools.pools()) w.raw(pool_json(*p));
    for (const pool::PoolSettings* s : pools.creating_list()) w.raw(creating_json(*s));
    w.end_array().end_object();
    ex.respond(200, kJson, body);
  });
  api.register_route(HTTP_POST, "/pools", [&pools](http::Exchange& ex, const RouteParams&) {
    pool::PoolSettings s;
    std::string msg;
    if (!pool::apply_settings_json(ex.request().body, &s, &msg).ok()) return respond_error(ex, 400, "InvalidPoolSettings", msg);
    if (pools.find(s.name)) return respond_error(ex, 409, "PoolExists", "pool " + s.name + " exists");
    // The pool's blocking start-up (image import, template) runs off the loop; the answer waits for
    // it (the exchange stays valid until answered, even if the client goes away).
    http::Exchange* exp = &ex;
    const std::string name = s.name;
    Status st = pools.create(s, &msg, [exp, &pools, name](Status done, const std::string& why) {
      if (!done.ok()) return respond_create_error(*exp, done, why);
      exp->respond(201, kJson, pool_json(*pools.find(name)), "Location: /pools/" + name + "\r\n");
    });
    if (!st.ok()) respond_create_error(ex, st, msg);
  });
  api.register_route(HTTP_GET, "/pools/{pool}", [&pools](http::Exchange& ex, const RouteParams& p) {
    pool::Pool* pool = pools.find(p.values[0]);
    if (!pool) {
      if (const pool::PoolSettings* s = pools.creating_settings(p.values[0])) return ex.respond(200, kJson, creating_json(*s));
      return respond_error(ex, 404, "PoolNotFound", "no session pool named '" + std::string(p.values[0]) + "'");
    }
    ex.respond(200, kJson, pool_json(*pool));
  });
  auto update = [&pools](http::Exchange& ex, const RouteParams& p) {
    pool::Pool* pool = pools.find(p.values[0]);
    if (!pool && pools.creating_settings(p.values[0])) {
      return respond_error(ex, 409, "PoolBeingCreated",
                           "pool " + std::string(p.values[0]) + " is being created; update it once its creation has answered");
    }
    if (!pool) return respond_error(ex, 404, "PoolNotFound", "no session pool named '" + std::string(p.values[0]) + "'");
    pool::PoolSettings s = pool->settings();
    std::string msg;
    if (!pool::apply_settings_json(ex.request().body, &s, &msg).ok()) return respond_error(ex, 400, "InvalidPoolSettings", msg);
    if (s.name != pool->settings().name) return respond_error(ex, 400, "InvalidPoolSettings", "a pool cannot be renamed");
    if (s.container_type != pool->settings().container_type) {
      return respond_error(ex, 400, "InvalidPoolSettings", "containerType cannot change; create another pool");
    }
    // What the pool's sandbox source was made from cannot change under it.
    auto fixed = [](const pool::PoolSettings& x) {
      pool::PoolSettings f;
      f.container_type = x.container_type;
      f.isolation = x.isolation;
      f.lifecycle = x.lifecycle;
      f.egress_enabled = x.egress_enabled;
      f.container = x.container;
      f.container.upstream_timeout_seconds = 0;
      return pool::settings_to_json(f);
    };
    if (fixed(s) != fixed(pool->settings())) {
      return respond_error(ex, 400, "InvalidPoolSettings",
                           "isolation, lifecycleType and the container (image, command, args, env, targetPort, probes) "
                           "cannot change; create another pool");
    }
    pool->update_settings(s);
    ex.respond(200, kJson, pool_json(*pool));
  };
  api.register_route(HTTP_PUT, "/pools/{pool}", update);
  api.register_route(HTTP_PATCH, "/pools/{pool}", update);
  api.register_route(HTTP_DELETE, "/pools/{pool}", [&pools](http::Exchange& ex, const RouteParams& p) {
    // Sessions end now; the pool's threads are joined and its sandboxes reaped in the background.
    // A creation still under way is cancelled (its POST gets 409 PoolDeleted).
    if (!pools.remove(p.values[0])) {
      return respond_error(ex, 404, "PoolNotFound", "no session pool named '" + std::string(p.values[0]) + "'");
    }
    ex.respond(204, {}, {});
  });
}

}  // namespace sp::api
