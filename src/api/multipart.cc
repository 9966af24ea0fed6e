// A strict multipart/form-data splitter.
#include "api/multipart.h"

#include <strings.h>

#include <string>

namespace sp::api {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool istarts(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && strncasecmp(s.data(), prefix.data(), prefix.size()) == 0;
}

// The end of the parameter that starts at `pos`: the next ';' outside a quoted string (a quoted
// filename may hold ';', as in filename="a;b.csv").
size_t param_end(std::string_view value, size_t pos) {
  bool quoted = false;
  for (size_t i = pos; i < value.size(); ++i) {
    if (value[i] == '"') {
      quoted = !quoted;
    } else if (value[i] == ';' && !quoted) {
      return i;
    }
  }
  return std::string_view::npos;
}

// The value of `param` in a header value like `form-data; name="file"; filename="a.csv"`.
std::string_view header_param(std::string_view value, std::string_view param) {
  size_t pos = 0;
  while (pos < value.size()) {
    size_t semi = param_end(value, pos);
    std::string_view item = trim(value.substr(pos, semi == std::string_view::npos ? std::string_view::npos : semi - pos));
    size_t eq = item.find('=');
    if (eq != std::string_view::npos && trim(item.substr(0, eq)).size() == param.size() &&
        istarts(trim(item.substr(0, eq)), param)) {
      std::string_view v = trim(item.substr(eq + 1));
      if (v.size() >= 2 && v.front() == '"') {
        // A quoted value ends at the next quote (names with quotes are refused upstream).
        size_t close = v.find('"', 1);
        if (close == std::string_view::npos) return {};
        return v.substr(1, close - 1);
      }
      return v;
    }
    if (semi == std::string_view::npos) break;
    pos = semi + 1;
  }
  return {};
}

}  // namespace

Status parse_part_headers(std::string_view headers, MultipartPart* part) {
  bool disposition = false;
  while (!headers.empty()) {
    size_t eol = headers.find("\r\n");
    std::string_view line = headers.substr(0, eol);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Error{kEInvalid, "multipart: header line"};
    std::string_view hname = trim(line.substr(0, colon));
    std::string_view hvalue = trim(line.substr(colon + 1));
    if (hname.size() == 19 && istarts(hname, "content-disposition")) {
      if (!istarts(hvalue, "form-data")) return Error{kEInvalid, "multipart: disposition"};
      part->name = header_param(hvalue, "name");
      part->filename = header_param(hvalue, "filename");
      disposition = true;
    } else if (hname.size() == 12 && istarts(hname, "content-type")) {
      part->content_type = hvalue;
    }
    if (eol == std::string_view::npos) break;
    headers.remove_prefix(eol + 2);
  }
  if (!disposition) return Error{kEInvalid, "multipart: no Content-Disposition"};
  return {};
}

Result<std::string_view> multipart_boundary(std::string_view content_type) {
  if (!istarts(content_type, "multipart/form-data")) return Error{kEInvalid, "not multipart/form-data"};
  std::string_view b = header_param(content_type, "boundary");
  if (b.empty() || b.size() > 70) return Error{kEInvalid, "multipart boundary"};
  return b;
}

Result<std::vector<MultipartPart>> parse_multipart(std::string_view body, std::string_view boundary,
                                                   size_t max_parts) {
  std::string delim = "--" + std::string(boundary);
  std::vector<MultipartPart> parts;
  size_t pos = body.find(delim);
  if (pos == std::string_view::npos) return Error{kEInvalid, "multipart: no boundary"};
  pos += delim.size();
  std::string next_delim = "\r\n" + delim;
  while (true) {
    if (body.substr(pos, 2) == "--") return parts;  // closing delimiter
    if (body.substr(pos, 2) != "\r\n") return Error{kEInvalid, "multipart: bad delimiter line"};
    pos += 2;
    size_t head_end = body.find("\r\n\r\n", pos);
    if (head_end == std::string_view::npos) return Error{kEInvalid, "multipart: part headers"};
    MultipartPart part;
    SP_TRY(parse_part_headers(body.substr(pos, head_end - pos), &part));
    size_t data_start = head_end + 4;
    size_t data_end = body.find(next_delim, data_start);
    if (data_end == std::string_view::npos) return Error{kEInvalid, "multipart: unterminated part"};
    part.data = body.substr(data_start, data_end - data_start);
    if (parts.size() >= max_parts) return Error{kETooLarge, "multipart: too many parts"};
    parts.push_back(part);
    pos = data_end + next_delim.size();
  }
}

namespace {
constexpr size_t kMaxPartHeaderBytes = 16 * 1024;
constexpr size_t kMaxPreambleBytes = 16 * 1024;
constexpr size_t kMaxStreamParts = 64;
}  // namespace

MultipartStream::MultipartStream(std::string_view boundary, Events* events)
    : delimiter_("\r\n--" + std::string(boundary)), events_(events) {
  // The first delimiter may open the body without a CRLF before it: pretend there was one.
  buf_ = "\r\n";
}

Status MultipartStream::feed(std::string_view chunk) {
  buf_.append(chunk);
  while (true) {
    switch (state_) {
      case State::kPreamble: {
        size_t at = buf_.find(delimiter_);
        if (at == std::string::npos) {
          if (buf_.size() > kMaxPreambleBytes + delimiter_.size()) return Error{kEInvalid, "multipart: no boundary"};
          return {};
        }
        buf_.erase(0, at + delimiter_.size());
        state_ = State::kAfterDelimiter;
        break;
      }
      case State::kAfterDelimiter:
        if (buf_.size() < 2) return {};
        if (buf_.compare(0, 2, "--") == 0) {
          state_ = State::kDone;
          buf_.clear();
          return {};
        }
        if (buf_.compare(0, 2, "\r\n") != 0) return Error{kEInvalid, "multipart: bad delimiter line"};
        buf_.erase(0, 2);
        state_ = State::kHeaders;
        break;
      case State::kHeaders: {
        size_t end = buf_.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (buf_.size() > kMaxPartHeaderBytes) return Error{kEInvalid, "multipart: part headers too large"};
          return {};
        }
        if (++parts_ > kMaxStreamParts) return Error{kETooLarge, "multipart: too many parts"};
        MultipartPart part;
        SP_TRY(parse_part_headers(std::string_view(buf_).substr(0, end), &part));
        events_->on_part_begin(part);
        buf_.erase(0, end + 4);
        state_ = State::kData;
        break;
      }
      case State::kData: {
        size_t at = buf_.find(delimiter_);
        if (at == std::string::npos) {
          // Everything but a possible start of the delimiter is data.
          if (buf_.size() >= delimiter_.size()) {
            size_t n = buf_.size() - (delimiter_.size() - 1);
            events_->on_part_data(std::string_view(buf_).substr(0, n));
            buf_.erase(0, n);
          }
          return {};
        }
        if (at > 0) events_->on_part_data(std::string_view(buf_).substr(0, at));
        events_->on_part_end();
        buf_.erase(0, at + delimiter_.size());
        state_ = State::kAfterDelimiter;
        break;
      }
      case State::kDone:
        buf_.clear();  // the epilogue is ignored
        return {};
    }
  }
}

Status MultipartStream::finish() const {
  if (state_ != State::kDone) return Error{kEInvalid, "multipart: body ended before the closing boundary"};
  return {};
}

}  // namespace sp::api
