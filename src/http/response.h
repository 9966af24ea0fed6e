// Response serialization: status line, headers and body appended to a connection's output buffer.
// Not a streaming writer: the whole response is formed at once (bodies here are small or already built).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sp::http {

const char* reason_phrase(int status);

// Writes IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") of `unix_seconds` into 29 bytes at `out`.
void format_http_date(int64_t unix_seconds, char out[29]);

struct ResponseHead {
  int status = 200;
  std::string_view content_type;  // empty: no Content-Type
  std::string_view extra_headers;  // complete "Name: value\r\n" lines, or empty
  bool close = false;              // adds "Connection: close"
  bool head_only = false;          // HEAD: headers announce the body, which is not sent
  // A body written afterwards by the caller: Content-Length is `content_length`, `body` unused.
  bool body_follows_separately = false;
  uint64_t content_length = 0;
  // With body_follows_separately: the length is not known ahead. Chunked: Transfer-Encoding:
  // chunked (HTTP/1.1 peers); else the body ends when the connection closes (HTTP/1.0 peers).
  bool unknown_length = false;
  bool chunked = false;
};

// Appends a complete response to `out`. `date` is the 29-byte cached Date value.
void append_response(std::string& out, const ResponseHead& head, std::string_view body, std::string_view date);

}  // namespace sp::http
