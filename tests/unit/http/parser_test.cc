// Tests for http/parser: framing, limits, chunked bodies, pipelining, split input.
#include "http/parser.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace sp::http {
namespace {

struct Parsed {
  std::string method, target, path, query, body;
  bool keep_alive = false, expect_continue = false, chunked = false;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Feeds `input` in pieces of `step` bytes; collects complete requests; stops at an error.
struct Driver {
  explicit Driver(ParserLimits limits = {}, uint64_t body_limit = 1 << 20) : parser(limits), body_limit(body_limit) {}
  RequestParser parser;
  uint64_t body_limit;
  std::vector<Parsed> done;
  int error = 0;

  void feed(std::string_view input, size_t step = SIZE_MAX) {
    for (size_t off = 0; off < input.size() && error == 0;) {
      size_t n = std::min(step, input.size() - off);
      feed_piece(input.data() + off, n);
      off += n;
    }
  }
  void feed_piece(const char* p, size_t n) {
    while (error == 0) {
      FeedResult r = parser.feed(p, n);
      p += r.consumed;
      n -= r.consumed;
      if (r.event == ParseEvent::kNeedMore) return;
      if (r.event == ParseEvent::kError) {
        error = parser.error_status();
        return;
      }
      if (r.event == ParseEvent::kHead) {
        if (!parser.set_body_limit(body_limit)) {
          error = parser.error_status();
          return;
        }
        continue;
      }
      Request& q = parser.request();
      Parsed out{std::string(q.method_name), std::string(q.target), std::string(q.path), std::string(q.query),
                 std::string(q.body), q.keep_alive, q.expect_continue, q.chunked, {}};
      for (const Header& h : q.headers) out.headers.emplace_back(h.name, h.value);
      CHECK(q.body_capacity >= q.body.size() + kBodyPadding);
      done.push_back(out);
    }
  }
};

TEST_CASE("a simple GET parses with its path, query and headers") {
  Driver d;
  d.feed("GET /pools/p/files?path=a%2Fb&x=1 HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nAccept: */*\r\n\r\n");
  REQUIRE(d.done.size() == 1);
  const Parsed& p = d.done[0];
  CHECK(p.method == "GET");
  CHECK(p.path == "/pools/p/files");
  CHECK(p.query == "path=a%2Fb&x=1");
  CHECK(p.keep_alive);
  REQUIRE(p.headers.size() == 3);
  CHECK(p.headers[1].first == "X-Empty");
  CHECK(p.headers[1].second == "");
  CHECK(p.headers[2].second == "*/*");
}

TEST_CASE("byte-at-a-time input gives the same request") {
  std::string req = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nX-Long-Header: abcdefghij\r\n\r\nhello world";
  for (size_t step : {1, 2, 3, 7, 64}) {
    Driver d;
    d.feed(req, step);
    REQUIRE(d.done.size() == 1);
    CHECK(d.done[0].body == "hello world");
    CHECK(d.done[0].headers[2].first == "X-Long-Header");
    CHECK(d.done[0].headers[2].second == "abcdefghij");
  }
}

TEST_CASE("pipelined requests come out in order") {
  Driver d;
  d.feed("GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\n\r\n");
  REQUIRE(d.done.size() == 3);
  CHECK(d.done[0].target == "/a");
  CHECK(d.done[1].body == "hi");
  CHECK(d.done[2].target == "/c");
}

TEST_CASE("chunked bodies are decoded, extensions and trailers ignored") {
  Driver d;
  d.feed(
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\n",
      3);
  REQUIRE(d.done.size() == 1);
  CHECK(d.done[0].chunked);
  CHECK(d.done[0].body == "hello world");
  REQUIRE(d.done[0].headers.size() == 1);  // the trailer is not a header
  CHECK(d.done[0].headers[0].first == "Transfer-Encoding");
}

TEST_CASE("bad chunk sizes are 400") {
  Driver d;
  d.feed("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
  CHECK(d.error == 400);
}

TEST_CASE("a chunked body over the limit is 413 while it arrives") {
  Driver d({}, 8);
  d.feed("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n");
  CHECK(d.error == 413);
}

TEST_CASE("a Content-Length over the limit is 413 before any body byte") {
  Driver d({}, 10);
  d.feed("POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
  CHECK(d.error == 413);
}

TEST_CASE("limits on the target and the header block") {
  ParserLimits limits;
  limits.max_url_bytes = 64;
  limits.max_header_bytes = 256;
  {
    Driver d(limits);
    d.feed("GET /" + std::string(100, 'a') + " HTTP/1.1\r\n\r\n", 7);
    CHECK(d.error == 414);
  }
  {
    Driver d(limits);
    d.feed("GET / HTTP/1.1\r\nX: " + std::string(300, 'b') + "\r\n\r\n", 5);
    CHECK(d.error == 431);
  }
  {
    Driver d(limits);
    std::string many = "GET / HTTP/1.1\r\n";
    for (size_t i = 0; i <= kMaxHeaders; ++i) many += "A:\r\n";
    d.feed(many + "\r\n");
    CHECK(d.error == 431);
  }
}

TEST_CASE("malformed requests are 400") {
  for (const char* bad : {"GET\r\n\r\n", "GE T / HTTP/1.1\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
                          "GET / HTTP/1.1\r\nBad\x01Header: x\r\n\r\n",
                          "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                          "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                          "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"}) {
    Driver d;
    d.feed(bad);
    CAPTURE(bad);
    CHECK(d.error == 400);
  }
}

TEST_CASE("Connection: close, HTTP/1.0 and Expect are reported") {
  Driver d;
  d.feed("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
  REQUIRE(d.done.size() == 1);
  CHECK_FALSE(d.done[0].keep_alive);
  Driver e;
  e.feed("GET / HTTP/1.0\r\n\r\n");
  REQUIRE(e.done.size() == 1);
  CHECK_FALSE(e.done[0].keep_alive);
  Driver f;
  f.feed("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx");
  REQUIRE(f.done.size() == 1);
  CHECK(f.done[0].expect_continue);
}

TEST_CASE("finish() tells a clean end from a truncated request") {
  Driver d;
  d.feed("GET / HTTP/1.1\r\n\r\n");
  CHECK(d.parser.finish());
  Driver e;
  e.feed("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
  CHECK_FALSE(e.parser.finish());
}

TEST_CASE("a request refused before its head is complete shows nothing of the one before it") {
  // Its error answer is formed (a HEAD's without a body) and logged from these fields, and the first request's
  // views point into a buffer the second one has reallocated.
  ParserLimits limits;
  limits.max_header_bytes = 256;
  Driver d(limits);
  d.feed("HEAD /first?" + std::string(100, 'q') + " HTTP/1.1\r\n\r\nGET /second HTTP/1.1\r\nX: " + std::string(300, 'b') +
         "\r\n\r\n");
  REQUIRE(d.done.size() == 1);
  CHECK(d.done[0].method == "HEAD");
  CHECK(d.error == 431);
  const Request& r = d.parser.request();
  CHECK(r.method == HTTP_GET);
  CHECK(r.method_name == "GET");
  CHECK(r.target.empty());
  CHECK(r.path.empty());
  CHECK(r.query.empty());
}

TEST_CASE("header lookup ignores case") {
  Driver d;
  d.feed("GET / HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n");
  REQUIRE(d.done.size() == 1);
  CHECK(d.parser.request().header("content-type") == "text/plain");
  CHECK(d.parser.request().header("CONTENT-TYPE") == "text/plain");
  CHECK(d.parser.request().header("missing").empty());
}

}  // namespace
}  // namespace sp::http
