// Google Benchmark of the request hot path without sockets: parse → route → response bytes.
#include <benchmark/benchmark.h>

#include <string>

#include "api/router.h"
#include "http/parser.h"
#include "http/response.h"

namespace {

constexpr std::string_view kHealthz =
    "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
std::string execute_request() {
  std::string body =
      "{\"properties\":{\"codeInputType\":\"inline\",\"executionType\":\"synchronous\",\"code\":\"print(1)\"}}";
  return "POST /pools/default/code/execute?identifier=session-0001&api-version=2024-02-02-preview HTTP/1.1\r\n"
         "Host: 127.0.0.1:8080\r\nAuthorization: Bearer token\r\nContent-Type: application/json\r\n"
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

sp::api::Router make_router() {
  sp::api::Router r;
  r.add(HTTP_GET, "/healthz", 0);
  r.add(HTTP_GET, "/readyz", 1);
  r.add(HTTP_GET, "/metrics", 2);
  r.add(HTTP_POST, "/pools/{pool}/code/execute", 3);
  r.add(HTTP_POST, "/pools/{pool}/executions", 4);
  r.add(HTTP_GET, "/pools/{pool}/files", 5);
  return r;
}

void run_one(benchmark::State& state, std::string_view wire) {
  sp::http::RequestParser parser({});
  sp::api::Router router = make_router();
  std::string out;
  out.reserve(4096);
  char date[29];
  sp::http::format_http_date(0, date);
  for (auto _ : state) {
    const char* p = wire.data();
    size_t n = wire.size();
    for (;;) {
      sp::http::FeedResult r = parser.feed(p, n);
      p += r.consumed;
      n -= r.consumed;
      if (r.event == sp::http::ParseEvent::kHead) {
        sp::api::Match m = router.match(parser.request().method, parser.request().path);
        parser.request().route = m.id;
        parser.set_body_limit(1 << 20);
        continue;
      }
      if (r.event == sp::http::ParseEvent::kComplete) break;
      state.SkipWithError("request did not complete");
      return;
    }
    out.clear();
    sp::http::ResponseHead head;
    head.content_type = "text/plain; charset=utf-8";
    sp::http::append_response(out, head, "ok\n", std::string_view(date, sizeof date));
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * wire.size()));
}

void BM_ParseRouteRespond_Healthz(benchmark::State& state) { run_one(state, kHealthz); }
void BM_ParseRouteRespond_ExecuteRequest(benchmark::State& state) {
  std::string wire = execute_request();
  run_one(state, wire);
}

BENCHMARK(BM_ParseRouteRespond_Healthz);
BENCHMARK(BM_ParseRouteRespond_ExecuteRequest);

}  // namespace

BENCHMARK_MAIN();
