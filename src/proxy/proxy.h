// Proxy: forwards requests for custom-container sessions to the container's targetPort, through
// connections made inside the session's network namespace (pool::ContainerAccess); not routing,
// authentication or allocation (api/proxy_routes.cc does those).
//
// Per request: the head is rewritten (hop-by-hop headers dropped per RFC 9110 §7.6.1,
// X-Forwarded-For/-Proto/-Host added) and sent on an idle kept-alive upstream connection of the
// session or a new one; the request body is streamed as it arrives (re-chunked when the client sent
// it chunked) and the answer is streamed back (Content-Length kept, otherwise chunked), each
// direction pausing its sender when more than 1 MiB waits. An answer's head waits up to 5 ms for its
// first body bytes, so that a head and body the container wrote separately leave in one write. An Upgrade answered 101 becomes a byte
// tunnel (websockets). Failures: refused/reset before an answer → 502, no answer head within the
// pool's upstreamTimeoutInSeconds → 504, cut off mid-answer → the client connection is closed.
//
// Threading: loop thread only. Lifetime: a request ends when its answer is complete, its client
// goes away, or its session ends (then it fails as above).
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "http/handler.h"
#include "pool/session.h"
#include "util/metrics.h"

namespace sp::proxy {

struct ProxyOptions {
  bool strip_authorization = false;  // API keys are configured: the client's token is ours, not the container's
  size_t idle_upstreams_per_session = 8;
};

struct ProxyCounters {
  uint64_t requests = 0;
  uint64_t upstream_connects = 0;
  uint64_t upstream_reuses = 0;
  uint64_t bad_gateway = 0;        // 502
  uint64_t gateway_timeout = 0;    // 504
  uint64_t cut_short = 0;          // answers the upstream cut off after they began
  uint64_t tunnels = 0;
  uint64_t bytes_to_upstream = 0;
  uint64_t bytes_from_upstream = 0;
};

class ProxyRequest;

class Proxy {
 public:
  Proxy(uv_loop_t* loop, ProxyOptions options);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // The route's stream_head, once the session is known: starts forwarding `ex` to `session` with
  // request target `target` ("/path?query", relative to the pool endpoint; only read during the call).
  void start(http::Exchange& ex, pool::Session* session, std::string_view target);
  // The route's stream_body / handler (whole request received) / stream_abort.
  void body(http::Exchange& ex, std::string_view chunk);
  void request_complete(http::Exchange& ex);
  void abort(http::Exchange& ex);
  bool forwarding(http::Exchange& ex) const { return requests_.count(&ex) != 0; }

  void render_metrics(std::string& out) const;
  const ProxyCounters& counters() const { return counters_; }
  size_t active() const { return requests_.size(); }

 private:
  friend class ProxyRequest;
  friend class Upstream;
  friend class SessionLink;
  void forget(ProxyRequest* r);
  void collect();
  // Request-head buffers of finished requests, reused (their capacity is what is kept).
  std::string take_buffer();
  void give_back(std::string&& buf);

  uv_loop_t* loop_;
  ProxyOptions options_;
  std::unordered_map<http::Exchange*, ProxyRequest*> requests_;
  std::vector<ProxyRequest*> finished_;  // freed at the next start() (never inside their callbacks)
  ProxyCounters counters_;
  LatencyHistogram head_latency_;  // request start → answer head from the container
  std::vector<std::string> spare_buffers_;
  std::string scratch_;  // an answer's headers while its head is written (not kept across calls)
  char read_buf_[64 * 1024];
};

}  // namespace sp::proxy
