// Server-wide routes: /healthz, /readyz, /metrics, and (with --test-routes) /_test/echo and /_test/sleep.
// Loop thread only.
#pragma once

#include <uv.h>

#include <functional>

#include "api/api.h"

namespace sp::api {

struct SystemState {
  std::function<bool()> ready;  // false while starting or draining: /readyz answers 503
};

void add_system_routes(Api& api, SystemState* state);

// Routes that exist only for the integration tests: an echo of the request body and a response
// delayed by ?ms=N (an asynchronous handler). cancel_all() answers every pending sleep at once.
class TestRoutes {
 public:
  void add(Api& api, uv_loop_t* loop);
  void cancel_all();

 private:
  struct Sleep;
  static void on_sleep_done(uv_timer_t* t);
  void finish(Sleep* s, int status);
  uv_loop_t* loop_ = nullptr;
  Sleep* pending_ = nullptr;
};

}  // namespace sp::api
