// RequestParser over llhttp: callbacks copy the head into one buffer, pauses mark the events.
#include "http/parser.h"

#include <strings.h>

namespace sp::http {
namespace {

RequestParser* self(llhttp_t* p) { return static_cast<RequestParser*>(p->data); }

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

std::string_view Request::header(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
}

RequestParser::RequestParser(ParserLimits limits) : limits_(limits) {
  llhttp_settings_init(&settings_);
  settings_.on_message_begin = on_message_begin;
  settings_.on_url = on_url;
  settings_.on_header_field = on_header_field;
  settings_.on_header_value = on_header_value;
  settings_.on_header_value_complete = on_header_value_complete;
  settings_.on_headers_complete = on_headers_complete;
  settings_.on_body = on_body;
  settings_.on_message_complete = on_message_complete;
  llhttp_init(&parser_, HTTP_REQUEST, &settings_);
  parser_.data = this;
}

void RequestParser::fail(int status, const char* reason) {
  if (error_status_ == 0) {
    error_status_ = status;
    error_reason_ = reason;
  }
}

int RequestParser::on_message_begin(llhttp_t* p) {
  RequestParser* s = self(p);
  s->in_message_ = true;
  s->head_done_ = false;
  s->head_.clear();
  s->body_.clear();
  s->url_ = {};
  s->header_spans_.clear();
  s->in_value_ = false;
  s->store_body_ = true;
  s->sink_ = nullptr;
  s->body_limit_ = 0;
  s->body_seen_ = 0;
  s->trailer_bytes_ = 0;
  // Nothing of the previous message may show through this one: an error answered before this head is complete
  // (400, 408, 413, 414, 431) is formed and logged from these fields, and views into head_ dangle once it grows.
  s->request_.method = HTTP_GET;
  s->request_.method_name = {};
  s->request_.target = {};
  s->request_.path = {};
  s->request_.query = {};
  s->request_.headers.clear();
  s->request_.body = {};
  s->request_.body_capacity = 0;
  s->request_.route = -1;
  s->request_.key_ok = true;
  return 0;
}

int RequestParser::append_head(const char* at, size_t len, bool url) {
  size_t used = url ? url_.len : head_.size() - url_.len;
  size_t limit = url ? limits_.max_url_bytes : limits_.max_header_bytes;
  if (used + len > limit) {
    if (url) {
      fail(414, "request target too long");
    } else {
      fail(431, "request header fields too large");
    }
    return HPE_USER;
  }
  head_.append(at, len);
  return 0;
}

// Trailer fields of a chunked body are not kept (the head's views must stay valid); they are
// counted against the header limit all the same.
int RequestParser::count_trailer(size_t len) {
  trailer_bytes_ += len;
  if (trailer_bytes_ > limits_.max_header_bytes) {
    fail(431, "trailer fields too large");
    return HPE_USER;
  }
  return 0;
}

int RequestParser::on_url(llhttp_t* p, const char* at, size_t len) {
  RequestParser* s = self(p);
  if (s->url_.len == 0) {
    s->url_.begin = static_cast<uint32_t>(s->head_.size());
    // The method is known once the target starts: an error answer to a HEAD from here on has no body.
    s->request_.method = static_cast<llhttp_method_t>(llhttp_get_method(p));
    s->request_.method_name = llhttp_method_name(s->request_.method);
  }
  int rc = s->append_head(at, len, true);
  if (rc == 0) s->url_.len += static_cast<uint32_t>(len);
  return rc;
}

int RequestParser::on_header_field(llhttp_t* p, const char* at, size_t len) {
  RequestParser* s = self(p);
  if (s->head_done_) return s->count_trailer(len);
  if (s->header_spans_.empty() || s->in_value_) {
    if (s->header_spans_.size() >= kMaxHeaders) {
      s->fail(431, "too many header fields");
      return HPE_USER;
    }
    s->header_spans_.push_back({Span{static_cast<uint32_t>(s->head_.size()), 0}, Span{}});
    s->in_value_ = false;
  }
  s->header_spans_.back().first.len += static_cast<uint32_t>(len);
  return s->append_head(at, len, false);
}

int RequestParser::on_header_value(llhttp_t* p, const char* at, size_t len) {
  RequestParser* s = self(p);
  if (s->head_done_) return s->count_trailer(len);
  Span& v = s->header_spans_.back().second;
  if (!s->in_value_) {
    s->in_value_ = true;
    v.begin = static_cast<uint32_t>(s->head_.size());
  }
  v.len += static_cast<uint32_t>(len);
  return s->append_head(at, len, false);
}

int RequestParser::on_header_value_complete(llhttp_t* p) {
  // An empty value never calls on_header_value; mark the field as finished all the same.
  self(p)->in_value_ = true;
  return 0;
}

int RequestParser::on_headers_complete(llhttp_t* p) {
  RequestParser* s = self(p);
  Request& r = s->request_;
  const char* base = s->head_.data();
  r.method = static_cast<llhttp_method_t>(llhttp_get_method(p));
  r.method_name = llhttp_method_name(r.method);
  r.target = std::string_view(base + s->url_.begin, s->url_.len);
  size_t q = r.target.find('?');
  r.path = r.target.substr(0, q);
  r.query = q == std::string_view::npos ? std::string_view() : r.target.substr(q + 1);
  for (const auto& [name, value] : s->header_spans_) {
    r.headers.push_back({std::string_view(base + name.begin, name.len), std::string_view(base + value.begin, value.len)});
  }
  r.http_minor = llhttp_get_http_minor(p);
  // An Upgrade request is answered as an ordinary one (then the connection ends), unless its
  // handler turns the connection into a tunnel (Exchange::begin_tunnel).
  r.upgrade = llhttp_get_upgrade(p) != 0;
  r.keep_alive = llhttp_should_keep_alive(p) != 0 && !r.upgrade;
  r.chunked = (p->flags & F_CHUNKED) != 0;
  r.has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
  r.content_length = r.has_content_length ? p->content_length : 0;
  r.expect_continue = r.http_minor >= 1 && has_token(r.header("expect"), "100-continue");
  s->head_done_ = true;
  return HPE_PAUSED;
}

bool RequestParser::set_body_limit(uint64_t max_body_bytes, bool store, BodySink* sink) {
  body_limit_ = max_body_bytes;
  store_body_ = store && sink == nullptr;
  sink_ = sink;
  if (request_.has_content_length && request_.content_length > max_body_bytes) {
    fail(413, "request body too large");
    return false;
  }
  if (store_body_ && request_.has_content_length) body_.reserve(request_.content_length + kBodyPadding);
  return true;
}

int RequestParser::on_body(llhttp_t* p, const char* at, size_t len) {
  RequestParser* s = self(p);
  s->body_seen_ += len;
  if (s->body_seen_ > s->body_limit_) {
    s->fail(413, "request body too large");
    return HPE_USER;
  }
  if (s->store_body_) {
    s->body_.append(at, len);
  } else if (s->sink_) {
    s->sink_->on_body_data(std::string_view(at, len));
  }
  return 0;
}

int RequestParser::on_message_complete(llhttp_t* p) {
  RequestParser* s = self(p);
  s->body_.reserve(s->body_.size() + kBodyPadding);
  s->request_.body = s->body_;
  s->request_.body_capacity = s->body_.capacity();
  s->in_message_ = false;
  return HPE_PAUSED;
}

FeedResult RequestParser::feed(const char* data, size_t len) {
  FeedResult out;
  if (error_status_ != 0) {
    out.event = ParseEvent::kError;
    return out;
  }
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_OK) {
    out.consumed = len;
    return out;
  }
  if (err == HPE_PAUSED) {
    out.consumed = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
    llhttp_resume(&parser_);
    out.event = in_message_ ? ParseEvent::kHead : ParseEvent::kComplete;
    return out;
  }
  if (err == HPE_PAUSED_UPGRADE) {
    // Bytes after an Upgrade request belong to another protocol; the request was already
    // delivered with keep_alive false, so the connection closes after its response.
    out.consumed = len;
    return out;
  }
  if (err == HPE_USER) {
    // fail() already recorded the status of the limit that was passed.
  } else if (err == HPE_INVALID_URL && url_.len >= limits_.max_url_bytes) {
    fail(414, "request target too long");
  } else {
    fail(400, llhttp_errno_name(err));
  }
  out.event = ParseEvent::kError;
  return out;
}

bool RequestParser::finish() {
  if (!in_message_) return true;
  return llhttp_finish(&parser_) == HPE_OK && !in_message_;
}

}  // namespace sp::http
