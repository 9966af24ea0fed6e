// ResponseParser: llhttp callbacks → UpstreamHead, body pieces, completion.
#include "proxy/response_parser.h"

namespace sp::proxy {
namespace {

constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr size_t kMaxHeaders = 100;

ResponseParser* self(llhttp_t* p) { return static_cast<ResponseParser*>(p->data); }

}  // namespace

ResponseParser::ResponseParser(Listener* listener) : listener_(listener) {
  llhttp_settings_init(&settings_);
  settings_.on_message_begin = on_message_begin;
  settings_.on_header_field = on_header_field;
  settings_.on_header_value = on_header_value;
  settings_.on_headers_complete = on_headers_complete;
  settings_.on_body = on_body;
  settings_.on_message_complete = on_message_complete;
  llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
  parser_.data = this;
}

void ResponseParser::reset(bool head_request) {
  llhttp_reset(&parser_);
  parser_.data = this;
  head_request_ = head_request;
  in_response_ = false;
  interim_ = false;
  done_ = false;
  error_ = "";
}

int ResponseParser::add_head_bytes(size_t len) {
  head_bytes_ += len;
  if (head_bytes_ > kMaxHeadBytes) {
    error_ = "response head too large";
    return -1;
  }
  return 0;
}

int ResponseParser::on_message_begin(llhttp_t* p) {
  ResponseParser* s = self(p);
  s->head_.status = 0;
  s->head_.http_minor = 1;
  s->head_.headers.clear();
  s->head_.keep_alive = true;
  s->head_.has_content_length = false;
  s->head_.content_length = 0;
  s->head_.chunked = false;
  s->head_buf_.clear();
  s->spans_.clear();
  s->head_bytes_ = 0;
  s->in_value_ = false;
  s->in_trailers_ = false;
  s->in_response_ = true;
  return 0;
}

// Names and values are copied into one buffer (a read can end inside one) and become views when the
// head is complete, so a response costs no allocation once the buffers have grown.
int ResponseParser::on_header_field(llhttp_t* p, const char* at, size_t len) {
  ResponseParser* s = self(p);
  if (s->add_head_bytes(len) != 0) return -1;
  if (s->in_trailers_) return 0;  // see in_trailers_
  if (s->in_value_ || s->spans_.empty()) {
    if (s->spans_.size() >= kMaxHeaders) {
      s->error_ = "too many response headers";
      return -1;
    }
    s->spans_.push_back({Span{static_cast<uint32_t>(s->head_buf_.size()), 0}, Span{}});
    s->in_value_ = false;
  }
  s->spans_.back().first.len += static_cast<uint32_t>(len);
  s->head_buf_.append(at, len);
  return 0;
}

int ResponseParser::on_header_value(llhttp_t* p, const char* at, size_t len) {
  ResponseParser* s = self(p);
  if (s->add_head_bytes(len) != 0) return -1;
  if (s->in_trailers_) return 0;
  if (s->spans_.empty()) return -1;
  Span& v = s->spans_.back().second;
  if (!s->in_value_) {
    s->in_value_ = true;
    v.begin = static_cast<uint32_t>(s->head_buf_.size());
  }
  v.len += static_cast<uint32_t>(len);
  s->head_buf_.append(at, len);
  return 0;
}

int ResponseParser::on_headers_complete(llhttp_t* p) {
  ResponseParser* s = self(p);
  UpstreamHead& h = s->head_;
  const char* base = s->head_buf_.data();
  for (const auto& [name, value] : s->spans_) {
    h.headers.emplace_back(std::string_view(base + name.begin, name.len), std::string_view(base + value.begin, value.len));
  }
  h.status = llhttp_get_status_code(p);
  h.http_minor = llhttp_get_http_minor(p);
  s->in_trailers_ = true;
  // llhttp takes "HTTP/1.1 00 x" as status 0: a status line a client could not read.
  if (h.status < 100 || h.status > 999) {
    s->error_ = "response status is not three digits";
    return -1;
  }
  // A 101 must say what it switches to (RFC 9110 §15.2.2): without Upgrade and Connection: upgrade
  // llhttp parses on as if it were HTTP, and the next answer would follow a head already delivered.
  if (h.status == 101 && p->upgrade == 0) {
    s->error_ = "101 answer without Upgrade and Connection: upgrade";
    return -1;
  }
  // llhttp 8 (Debian 12's) reads a body a Content-Length announces on any status; 1xx, 204 and 304
  // answers have none (RFC 9110 §6.4.1): returning 1 tells it so, as for the answer to a HEAD.
  if (h.status >= 100 && h.status < 200 && h.status != 101) {
    s->interim_ = true;  // 100 Continue, 103 Early Hints: not forwarded
    return 1;
  }
  h.keep_alive = llhttp_should_keep_alive(p) != 0;
  h.chunked = (p->flags & F_CHUNKED) != 0;
  h.has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
  h.content_length = h.has_content_length ? p->content_length : 0;
  s->listener_->on_upstream_head(h);
  // A HEAD request's answer announces a body it does not carry.
  return (s->head_request_ && h.status != 101) || h.status == 204 || h.status == 304 ? 1 : 0;
}

int ResponseParser::on_body(llhttp_t* p, const char* at, size_t len) {
  self(p)->listener_->on_upstream_body(std::string_view(at, len));
  return 0;
}

int ResponseParser::on_message_complete(llhttp_t* p) {
  ResponseParser* s = self(p);
  s->in_response_ = false;
  if (s->interim_) {
    s->interim_ = false;
    return 0;
  }
  if (s->head_.status == 101) return 0;
  // The answer is whole: what follows until reset() is ignored, so the head stays as delivered.
  s->done_ = true;
  s->listener_->on_upstream_complete();
  return HPE_PAUSED;
}

ResponseParser::Result ResponseParser::feed(const char* data, size_t len, size_t* consumed) {
  if (done_) {
    *consumed = len;
    return Result::kOk;
  }
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_OK || (err == HPE_PAUSED && done_)) {
    *consumed = len;
    return Result::kOk;
  }
  if (err == HPE_PAUSED_UPGRADE) {
    *consumed = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
    return Result::kUpgrade;
  }
  *consumed = 0;
  if (error_[0] == '\0') error_ = llhttp_errno_name(err);
  return Result::kError;
}

bool ResponseParser::finish() {
  if (!in_response_) return true;
  if (llhttp_finish(&parser_) != HPE_OK && !done_) return false;
  return !in_response_;
}

}  // namespace sp::proxy
