// Tests for container/log_lines.h: splitting, neutralising, cutting and rate limiting of container
// output, with explicit time.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "container/log_lines.h"

namespace sp::container {
namespace {

struct Sink {
  std::vector<std::string> got;
  LogLines::Emit emit() {
    return [this](std::string_view l) { got.emplace_back(l); };
  }
};

TEST_CASE("lines are cut at newlines, across reads, with CRLF endings and a last line without one") {
  LogLines ll(100, 0);
  Sink s;
  ll.feed("listening on 8080\nGET / 200\r\npart", 0, s.emit());
  CHECK(s.got == std::vector<std::string>{"listening on 8080", "GET / 200"});
  ll.feed("ial line\n\nlast", 1, s.emit());
  ll.finish(s.emit());
  CHECK(s.got == std::vector<std::string>{"listening on 8080", "GET / 200", "partial line", "", "last"});
  CHECK(ll.lines() == 5);
  CHECK(ll.dropped() == 0);
}

TEST_CASE("control bytes cannot forge lines or escape sequences") {
  LogLines ll(100, 0);
  Sink s;
  const char raw[] = "a\x1b[31mred\rb\tc\x7f\0d\n";
  ll.feed(std::string_view(raw, sizeof raw - 1), 0, s.emit());
  REQUIRE(s.got.size() == 1);
  CHECK(s.got[0] == "a?[31mred?b\tc??d");
}

TEST_CASE("a long line is cut, the rest of it skipped, the next line whole") {
  LogLines ll(100, 0);
  Sink s;
  std::string big(LogLines::kMaxLine + 500, 'x');
  ll.feed(big.substr(0, 1000), 0, s.emit());
  ll.feed(big.substr(1000) + "\r\nnext\n", 0, s.emit());
  REQUIRE(s.got.size() == 2);
  CHECK(s.got[0] == std::string(LogLines::kMaxLine, 'x') + "...");
  CHECK(s.got[1] == "next");
}

TEST_CASE("the rate limit: a burst of 2 s worth, then per_second lines a second, drops reported") {
  LogLines ll(5, 1000);  // 5 lines/s, burst 10
  Sink s;
  for (int i = 0; i < 25; ++i) ll.feed("line " + std::to_string(i) + "\n", 1000, s.emit());
  CHECK(s.got.size() == 10);
  CHECK(ll.dropped() == 15);
  // 1 s later: 5 tokens; the first line let through is preceded by the note.
  for (int i = 25; i < 35; ++i) ll.feed("line " + std::to_string(i) + "\n", 2000, s.emit());
  REQUIRE(s.got.size() == 16);
  CHECK(s.got[10] == "[15 lines dropped: over the log rate]");
  CHECK(s.got[11] == "line 25");
  CHECK(s.got[15] == "line 29");
  CHECK(ll.lines() == 15);
  CHECK(ll.dropped() == 20);
  // The end reports what was dropped since, without a token.
  ll.finish(s.emit());
  CHECK(s.got.back() == "[5 lines dropped: over the log rate]");
}

TEST_CASE("a quiet container gets its burst back, never more") {
  LogLines ll(2, 0);
  Sink s;
  for (int i = 0; i < 4; ++i) ll.feed("a\n", 0, s.emit());
  CHECK(s.got.size() == 4);
  for (int i = 0; i < 10; ++i) ll.feed("b\n", 3'600'000, s.emit());
  CHECK(s.got.size() == 8);  // 4 (the burst) again after an hour, not 7200
  CHECK(ll.dropped() == 6);
}

}  // namespace
}  // namespace sp::container
