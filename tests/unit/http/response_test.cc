// Tests for http/response: serialization and the Date format.
#include "http/response.h"

#include <doctest/doctest.h>

namespace sp::http {
namespace {

TEST_CASE("IMF-fixdate") {
  char d[29];
  format_http_date(784111777, d);  // the RFC 9110 example
  CHECK(std::string(d, 29) == "Sun, 06 Nov 1994 08:49:37 GMT");
}

TEST_CASE("responses carry length, type and close") {
  std::string out;
  ResponseHead h;
  h.status = 404;
  h.content_type = "application/json";
  h.close = true;
  h.extra_headers = "X-A: b\r\n";
  append_response(out, h, "{}", "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(out ==
        "HTTP/1.1 404 Not Found\r\nServer: sandpool\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\nX-A: b\r\n\r\n{}");
}

TEST_CASE("HEAD announces the length but sends no body; 204 has neither") {
  std::string out;
  ResponseHead h;
  h.head_only = true;
  append_response(out, h, "hello", "D");
  CHECK(out.find("Content-Length: 5\r\n") != std::string::npos);
  CHECK(out.substr(out.size() - 4) == "\r\n\r\n");
  out.clear();
  h = {};
  h.status = 204;
  append_response(out, h, "", "D");
  CHECK(out.find("Content-Length") == std::string::npos);
}

}  // namespace
}  // namespace sp::http
