// /healthz, /readyz, /metrics and the test-only routes.
#include "api/system_routes.h"

#include <charconv>

#include "api/errors.h"

namespace sp::api {

void add_system_routes(Api& api, SystemState* state) {
  RouteOptions open;
  open.open = true;
  api.register_route(HTTP_GET, "/healthz", [](http::Exchange& ex, const RouteParams&) {
    ex.respond(200, "text/plain; charset=utf-8", "ok\n");
  }, open);
  api.register_route(HTTP_GET, "/readyz", [state](http::Exchange& ex, const RouteParams&) {
    if (state->ready && !state->ready()) {
      respond_error(ex, 503, "NotReady", "the server is starting or draining");
      return;
    }
    ex.respond(200, "text/plain; charset=utf-8", "ready\n");
  }, open);
  api.register_route(HTTP_GET, "/metrics", [&api](http::Exchange& ex, const RouteParams&) {
    std::string out;
    out.reserve(16 * 1024);
    api.render_metrics(out);
    ex.respond(200, "text/plain; version=0.0.4; charset=utf-8", out);
  }, open);
}

struct TestRoutes::Sleep {
  uv_timer_t timer;
  http::Exchange* ex;
  TestRoutes* owner;
  Sleep* prev = nullptr;
  Sleep* next = nullptr;
};

void TestRoutes::add(Api& api, uv_loop_t* loop) {
  loop_ = loop;
  api.register_route(
      HTTP_POST, "/_test/echo",
      [](http::Exchange& ex, const RouteParams&) {
        std::string_view type = ex.request().header("content-type");
        ex.respond(200, type.empty() ? "application/octet-stream" : type, ex.request().body);
      },
      RouteOptions{64ull << 20, {}, nullptr, {}, {}, {}, true});
  api.register_route(HTTP_GET, "/_test/sleep", [this](http::Exchange& ex, const RouteParams&) {
    uint64_t ms = 0;
    std::string_view q = ex.request().query;
    if (q.substr(0, 3) == "ms=") std::from_chars(q.data() + 3, q.data() + q.size(), ms);
    if (ms > 600000) ms = 600000;
    auto* s = new Sleep{};
    s->ex = &ex;
    s->owner = this;
    s->next = pending_;
    if (pending_) pending_->prev = s;
    pending_ = s;
    uv_timer_init(loop_, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_sleep_done, ms, 0);
  }, RouteOptions{0, {}, nullptr, {}, {}, {}, true});
}

void TestRoutes::on_sleep_done(uv_timer_t* t) {
  auto* s = static_cast<Sleep*>(t->data);
  s->owner->finish(s, 200);
}

void TestRoutes::finish(Sleep* s, int status) {
  if (s->prev) s->prev->next = s->next; else pending_ = s->next;
  if (s->next) s->next->prev = s->prev;
  if (status == 200) {
    s->ex->respond(200, "text/plain; charset=utf-8", "slept\n");
  } else {
    respond_error(*s->ex, status, "ServiceUnavailable", "the server is shutting down");
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&s->timer), [](uv_handle_t* h) { delete static_cast<Sleep*>(h->data); });
}

void TestRoutes::cancel_all() {
  while (pending_) finish(pending_, 503);
}

}  // namespace sp::api
