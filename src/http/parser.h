// RequestParser: turns HTTP/1.1 request bytes into Request values with llhttp; no sockets, no libuv.
//
// Contract: the owner feeds bytes with feed(); parsing stops at each event the owner must act on
// (head complete, message complete, error), reporting how many bytes were consumed so the owner can
// resume with the rest. A Request's string_views stay valid until the next message begins.
// Limits (URL bytes, header bytes and count, body bytes) are enforced while bytes arrive, so an
// oversized request is refused before it is stored.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sp::http {

inline constexpr size_t kMaxHeaders = 100;
inline constexpr size_t kBodyPadding = 64;  // bytes after the body that simdjson may read

struct Header {
  std::string_view name;
  std::string_view value;
};

struct Request {
  llhttp_method_t method = HTTP_GET;
  std::string_view method_name;
  std::string_view target;  // as sent: path plus optional ?query
  std::string_view path;    // target up to '?', not percent-decoded
  std::string_view query;   // after '?', empty when none
  std::vector<Header> headers;
  bool keep_alive = true;
  bool upgrade = false;  // Connection: upgrade + Upgrade (or CONNECT): the connection may become a tunnel
  bool expect_continue = false;
  bool chunked = false;
  bool has_content_length = false;
  uint64_t content_length = 0;
  int http_minor = 1;
  std::string_view body;  // valid at message completion; padded by kBodyPadding bytes of capacity

  // Case-insensitive lookup of the first header with this name; empty when absent.
  std::string_view header(std::string_view name) const;
  // The padded capacity behind `body` (for simdjson::padded_string_view).
  size_t body_capacity = 0;
  // Set by the handler in on_head: its route and the route's path parameters (views into `path`),
  // read back in on_request and on_response.
  int route = -1;
  std::string_view route_params[4];
  int route_param_count = 0;
  bool key_ok = true;  // false: the route needs an API key the request lacks (answered 401)
  // The peer's address as text, for logs ("127.0.0.1:50312").
  std::string_view peer;
};

// Receives body bytes of a streamed request (set_body_limit with a sink) instead of storing them.
class BodySink {
 public:
  virtual ~BodySink() = default;
  virtual void on_body_data(std::string_view chunk) = 0;
};

// Case-insensitive comparison of header names and tokens.
bool iequals(std::string_view a, std::string_view b);
// True when a comma-separated header value contains `token` (case-insensitive, spaces trimmed).
bool has_token(std::string_view value, std::string_view token);

struct ParserLimits {
  size_t max_url_bytes = 8192;
  size_t max_header_bytes = 64 * 1024;
};

enum class ParseEvent {
  kNeedMore,  // all bytes consumed, the message is not complete
  kHead,      // request line and headers parsed: call set_body_limit(), then feed the rest
  kComplete,  // the whole message (body included) is in request()
  kError,     // malformed or over a limit: answer error_status() and close the connection
};

struct FeedResult {
  size_t consumed = 0;
  ParseEvent event = ParseEvent::kNeedMore;
};

class RequestParser {
 public:
  explicit RequestParser(ParserLimits limits);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  FeedResult feed(const char* data, size_t len);

  // After kHead: the body limit of the route. A Content-Length above it is an error at once;
  // a chunked body is refused when its running total passes it. `store` false discards the bytes.
  // Returns false (and the parser is in error with 413) when Content-Length is already too large.
  bool set_body_limit(uint64_t max_body_bytes, bool store = true, BodySink* sink = nullptr);

  // The peer closed its side: true when that ends a message cleanly or no message was started.
  bool finish();

  Request& request() { return request_; }
  bool in_message() const { return in_message_; }
  bool head_done() const { return head_done_; }
  int error_status() const { return error_status_; }
  const char* error_reason() const { return error_reason_; }

 private:
  struct Span {
    uint32_t begin = 0;
    uint32_t len = 0;
  };
  static int on_message_begin(llhttp_t* p);
  static int on_url(llhttp_t* p, const char* at, size_t len);
  static int on_header_field(llhttp_t* p, const char* at, size_t len);
  static int on_header_value(llhttp_t* p, const char* at, size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, size_t len);
  static int on_message_complete(llhttp_t* p);

  int append_head(const char* at, size_t len, bool url);
  int count_trailer(size_t len);
  void fail(int status, const char* reason);

  llhttp_t parser_{};
  llhttp_settings_t settings_{};
  ParserLimits limits_;
  Request request_;
  std::string head_;  // URL then header names and values, back to back
  std::string body_;
  Span url_;
  std::vector<std::pair<Span, Span>> header_spans_;
  bool in_value_ = false;
  bool in_message_ = false;
  bool head_done_ = false;
  bool store_body_ = true;
  BodySink* sink_ = nullptr;
  uint64_t body_limit_ = 0;
  uint64_t body_seen_ = 0;
  size_t trailer_bytes_ = 0;
  int error_status_ = 0;
  const char* error_reason_ = "";
};

}  // namespace sp::http
