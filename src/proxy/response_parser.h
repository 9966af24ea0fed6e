// ResponseParser: HTTP/1.1 responses from a proxied container, parsed with llhttp; no sockets.
//
// The owner feeds bytes as they arrive and gets, per response: the head (status, headers,
// framing), the body in pieces (de-chunked), and the end. Interim 1xx answers other than 101
// are skipped; 1xx, 204 and 304 answers have no body whatever their Content-Length; a chunked
// body's trailer fields are dropped; bytes after a final answer are ignored until the next
// reset(). A 101 (the upstream accepted an Upgrade) stops parsing: the bytes after its head belong
// to the tunnel; a 101 without Upgrade and Connection: upgrade, and a status that is not three
// digits, are errors. Limits: 64 KiB of head (trailers included), 100 headers.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sp::proxy {

// Header names and values point into the parser: they stay valid until its next response begins or
// its next reset(), whichever comes first.
struct UpstreamHead {
  int status = 0;
  int http_minor = 1;
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  bool keep_alive = true;        // the upstream connection can serve another request
  bool has_content_length = false;
  uint64_t content_length = 0;
  bool chunked = false;
};

class ResponseParser {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void on_upstream_head(const UpstreamHead& head) = 0;
    virtual void on_upstream_body(std::string_view data) = 0;
    virtual void on_upstream_complete() = 0;
  };

  enum class Result { kOk, kUpgrade, kError };

  explicit ResponseParser(Listener* listener);
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Before each request sent upstream: a HEAD request's answer has no body.
  void reset(bool head_request);
  // kUpgrade: a 101 head was delivered; `*consumed` bytes of `data` were its head, the rest is
  // tunnel data. kError: malformed or over a limit (error() says why).
  Result feed(const char* data, size_t len, size_t* consumed);
  // The upstream closed its side: completes a body that ends with the connection. False when a
  // response was cut short.
  bool finish();
  bool in_response() const { return in_response_; }
  // The last head delivered (see UpstreamHead for how long its headers stay valid).
  const UpstreamHead& head() const { return head_; }
  const char* error() const { return error_; }

 private:
  static int on_message_begin(llhttp_t* p);
  static int on_header_field(llhttp_t* p, const char* at, size_t len);
  static int on_header_value(llhttp_t* p, const char* at, size_t len);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, size_t len);
  static int on_message_complete(llhttp_t* p);
  int add_head_bytes(size_t len);

  struct Span {
    uint32_t begin = 0;
    uint32_t len = 0;
  };

  Listener* listener_;
  llhttp_t parser_{};
  llhttp_settings_t settings_{};
  UpstreamHead head_;
  std::string head_buf_;  // the head's names and values, back to back; kept between responses
  std::vector<std::pair<Span, Span>> spans_;
  bool head_request_ = false;
  bool in_value_ = false;
  // After the head, header callbacks are a chunked body's trailer fields: they are counted against
  // the head's limit and dropped (the proxy does not forward trailers). Appending them to
  // head_buf_ would move the views of the head already delivered.
  bool in_trailers_ = false;
  bool in_response_ = false;
  bool interim_ = false;  // a 1xx answer that is skipped
  bool done_ = false;     // a final answer is complete: the rest is ignored until reset()
  size_t head_bytes_ = 0;
  const char* error_ = "";
};

}  // namespace sp::proxy
