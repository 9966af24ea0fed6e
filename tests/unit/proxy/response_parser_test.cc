// Tests for proxy/response_parser: framing, interim answers, upgrades, limits, byte-at-a-time input.
#include "proxy/response_parser.h"

#include <doctest/doctest.h>

#include <string>

namespace sp::proxy {
namespace {

// A head as delivered, its headers copied (the parser's views end with the next response).
struct Head {
  int status = 0;
  bool keep_alive = false, has_content_length = false, chunked = false;
  uint64_t content_length = 0;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct Recorder : ResponseParser::Listener {
  std::vector<Head> heads;
  std::string body;
  int completes = 0;
  void on_upstream_head(const UpstreamHead& h) override {
    Head copy{h.status, h.keep_alive, h.has_content_length, h.chunked, h.content_length, {}};
    for (const auto& [name, value] : h.headers) copy.headers.emplace_back(name, value);
    heads.push_back(std::move(copy));
  }
  void on_upstream_body(std::string_view d) override { body.append(d); }
  void on_upstream_complete() override { ++completes; }
};

// Feeds `text` in pieces of `step` bytes; returns the last result and the total consumed.
ResponseParser::Result feed(ResponseParser& p, std::string_view text, size_t step, size_t* consumed_total) {
  *consumed_total = 0;
  ResponseParser::Result r = ResponseParser::Result::kOk;
  for (size_t i = 0; i < text.size(); i += step) {
    size_t n = std::min(step, text.size() - i), used = 0;
    r = p.feed(text.data() + i, n, &used);
    *consumed_total += used;
    if (r != ResponseParser::Result::kOk) break;
  }
  return r;
}

TEST_CASE("content-length and chunked answers, whole or a byte at a time") {
  for (size_t step : {size_t{1}, size_t{7}, size_t{100000}}) {
    Recorder rec;
    ResponseParser p(&rec);
    p.reset(false);
    size_t used = 0;
    CHECK(feed(p, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello", step, &used) ==
          ResponseParser::Result::kOk);
    REQUIRE(rec.heads.size() == 1);
    CHECK(rec.heads[0].status == 200);
    CHECK(rec.heads[0].has_content_length);
    CHECK(rec.heads[0].content_length == 5);
    CHECK(rec.heads[0].keep_alive);
    CHECK(rec.heads[0].headers.size() == 3);
    CHECK(rec.heads[0].headers[1].first == "X-A");
    CHECK(rec.heads[0].headers[1].second == "1");
    CHECK(rec.body == "hello");
    CHECK(rec.completes == 1);

    p.reset(false);
    CHECK(feed(p, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nT: x\r\n\r\n", step,
               &used) == ResponseParser::Result::kOk);
    REQUIRE(rec.heads.size() == 2);
    CHECK(rec.heads[1].chunked);
    CHECK(rec.body == "helloabcde");
    CHECK(rec.completes == 2);
  }
}

TEST_CASE("a body that ends with the connection") {
  Recorder rec;
  ResponseParser p(&rec);
  p.reset(false);
  size_t used = 0;
  CHECK(feed(p, "HTTP/1.1 200 OK\r\n\r\nstream until close", 4, &used) == ResponseParser::Result::kOk);
  CHECK(rec.completes == 0);
  CHECK_FALSE(rec.heads[0].keep_alive);
  CHECK(p.finish());
  CHECK(rec.completes == 1);
  CHECK(rec.body == "stream until close");
}

TEST_CASE("bytes after a final answer are ignored until reset(), and its head stays as delivered") {
  for (size_t step : {size_t{1}, size_t{5}, size_t{100000}}) {
    Recorder rec;
    ResponseParser p(&rec);
    p.reset(false);
    size_t used = 0;
    std::string text = "HTTP/1.1 200 OK\r\nX-A: first\r\nContent-Length: 2\r\n\r\nok"
                       "HTTP/1.1 500 Internal Server Error\r\nX-A: second\r\nContent-Length: 0\r\n\r\n";
    CHECK(feed(p, text, step, &used) == ResponseParser::Result::kOk);
    CHECK(used == text.size());
    REQUIRE(rec.heads.size() == 1);
    CHECK(rec.completes == 1);
    CHECK(rec.body == "ok");
    CHECK(p.head().status == 200);
    REQUIRE(p.head().headers.size() == 2);
    CHECK(p.head().headers[0].second == "first");
    CHECK(p.finish());

    p.reset(false);
    CHECK(feed(p, "HTTP/1.1 404 Not Found\r\nX-B: again\r\nContent-Length: 0\r\n\r\n", step, &used) ==
          ResponseParser::Result::kOk);
    REQUIRE(rec.heads.size() == 2);
    CHECK(rec.heads[1].status == 404);
    CHECK(p.head().headers[0].first == "X-B");
    CHECK(rec.completes == 2);
  }
}

TEST_CASE("a chunked answer's trailer fields leave the delivered head's views in place") {
  // Found by tests/fuzz/proxy_response_fuzz.cc under ASan: trailers were appended to the buffer the
  // head's views point into, and the proxy reads the head after its body when the client's request
  // is still arriving (deliver_head): a container could make the server read freed memory.
  struct Keeper : Recorder {
    const UpstreamHead* head = nullptr;
    void on_upstream_head(const UpstreamHead& h) override {
      Recorder::on_upstream_head(h);
      head = &h;
    }
  } rec;
  ResponseParser p(&rec);
  p.reset(false);
  std::string trailers;
  for (int i = 0; i < 50; ++i) trailers += "Trailer-" + std::to_string(i) + ": " + std::string(200, 'v') + "\r\n";
  size_t used = 0;
  CHECK(feed(p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n4\r\nwiki\r\n0\r\n" + trailers + "\r\n",
             7, &used) == ResponseParser::Result::kOk);
  CHECK(rec.completes == 1);
  CHECK(rec.body == "wiki");
  REQUIRE(rec.head != nullptr);
  REQUIRE(rec.head->headers.size() == 2);
  CHECK(rec.head->headers[1].first == "X-A");
  CHECK(rec.head->headers[1].second == "b");
  // Trailers still count against the head's limit.
  p.reset(false);
  std::string big;
  for (int i = 0; i < 400; ++i) big += "T" + std::to_string(i) + ": " + std::string(200, 'v') + "\r\n";
  CHECK(feed(p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + big + "\r\n", 4096, &used) ==
        ResponseParser::Result::kError);
  CHECK(std::string(p.error()) == "response head too large");
}

TEST_CASE("an answer cut short is reported by finish()") {
  Recorder rec;
  ResponseParser p(&rec);
  p.reset(false);
  size_t used = 0;
  feed(p, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100, &used);
  CHECK_FALSE(p.finish());
  CHECK(rec.completes == 0);
}

TEST_CASE("interim 100 and 103 answers are skipped; HEAD answers have no body") {
  Recorder rec;
  ResponseParser p(&rec);
  p.reset(false);
  size_t used = 0;
  CHECK(feed(p, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 3,
             &used) == ResponseParser::Result::kOk);
  REQUIRE(rec.heads.size() == 1);
  CHECK(rec.heads[0].status == 204);
  CHECK(rec.completes == 1);

  p.reset(true);
  CHECK(feed(p, "HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n", 100, &used) == ResponseParser::Result::kOk);
  CHECK(rec.heads.back().content_length == 12345);
  CHECK(rec.completes == 2);
  CHECK(rec.body.empty());

  // A Content-Length on a 1xx, 204 or 304 announces no body (found by
  // tests/fuzz/proxy_response_fuzz.cc: llhttp 8 read 5 bytes of "body" after a 100, which the proxy
  // then sent as the start of the final answer's body).
  p.reset(false);
  CHECK(feed(p, "HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1,
             &used) == ResponseParser::Result::kOk);
  CHECK(rec.heads.back().status == 200);
  CHECK(rec.body == "ok");
  for (const char* status : {"204 No Content", "304 Not Modified"}) {
    rec.body.clear();
    p.reset(false);
    CHECK(feed(p, std::string("HTTP/1.1 ") + status + "\r\nContent-Length: 5\r\n\r\nhello", 100, &used) ==
          ResponseParser::Result::kOk);
    CHECK(!p.in_response());
    CHECK(rec.body.empty());
  }
  CHECK(rec.completes == 5);
}

TEST_CASE("101 stops parsing: what follows belongs to the tunnel") {
  Recorder rec;
  ResponseParser p(&rec);
  p.reset(false);
  std::string text = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi";
  size_t used = 0;
  CHECK(p.feed(text.data(), text.size(), &used) == ResponseParser::Result::kUpgrade);
  CHECK(used == text.size() - 4);
  REQUIRE(rec.heads.size() == 1);
  CHECK(rec.heads[0].status == 101);
  CHECK(rec.completes == 0);
}

TEST_CASE("malformed and oversized answers are errors") {
  Recorder rec;
  ResponseParser p(&rec);
  size_t used = 0;
  p.reset(false);
  CHECK(feed(p, "HTTP/1.1 2OO OK\r\n\r\n", 100, &used) == ResponseParser::Result::kError);
  p.reset(false);
  CHECK(feed(p, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 100, &used) ==
        ResponseParser::Result::kError);
  p.reset(false);
  std::string huge = "HTTP/1.1 200 OK\r\nX: " + std::string(70000, 'a') + "\r\n\r\n";
  CHECK(feed(p, huge, 4096, &used) == ResponseParser::Result::kError);
  CHECK(std::string(p.error()) == "response head too large");
  p.reset(false);
  std::string many = "HTTP/1.1 200 OK\r\n";
  for (int i = 0; i < 101; ++i) many += "H" + std::to_string(i) + ": v\r\n";
  CHECK(feed(p, many + "\r\n", 100000, &used) == ResponseParser::Result::kError);
  CHECK(std::string(p.error()) == "too many response headers");
  // Status codes are three digits (found by tests/fuzz/proxy_response_fuzz.cc: llhttp reads "00" as 0).
  for (const char* line : {"HTTP/1.1 00 Continue\r\n\r\n", "HTTP/1.1 0 OK\r\n\r\n", "HTTP/1.1 099 x\r\n\r\n"}) {
    p.reset(false);
    CHECK(feed(p, line, 100, &used) == ResponseParser::Result::kError);
    CHECK(std::string(p.error()) == "response status is not three digits");
  }
  // A 101 that does not name the protocol it switches to (found by the same fuzz target).
  p.reset(false);
  CHECK(feed(p, "HTTP/1.1 101 Switching\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 100, &used) ==
        ResponseParser::Result::kError);
  CHECK(std::string(p.error()) == "101 answer without Upgrade and Connection: upgrade");
  CHECK(rec.heads.empty());
}

}  // namespace
}  // namespace sp::proxy
