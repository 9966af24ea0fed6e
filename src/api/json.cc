// JSON string escaping with UTF-8 validation, the writer's comma bookkeeping, and a strict
// recognizer for JSON that comes from sandboxes.
#include "api/json.h"

#include <cctype>
#include <charconv>
#include <cmath>

namespace sp::api {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 when it is invalid (overlongs, surrogates and
// code points above U+10FFFF are invalid).
size_t utf8_sequence(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  unsigned char c = b(0);
  size_t left = s.size() - i;
  auto cont = [&](size_t k) { return k < left && (b(k) & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  out += '"';
  size_t i = 0;
  size_t run = 0;  // start of bytes that need no escaping
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    size_t n = c < 0x80 ? 1 : utf8_sequence(s, i);
    if (n > 1) {
      i += n;
      continue;
    }
    out.append(s.data() + run, i - run);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += "\\ufffd";  // a byte that starts no valid UTF-8 sequence
        }
    }
    ++i;
    run = i;
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

void JsonWriter::value_prefix() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (depth_ > 0) {
    if (first_bits_ & (1ull << depth_)) {
      first_bits_ &= ~(1ull << depth_);
    } else {
      out_ += ',';
    }
  }
}

JsonWriter& JsonWriter::begin_object() {
  value_prefix();
  out_ += '{';
  ++depth_;
  first_bits_ |= 1ull << depth_;
  return *this;
}

JsonWriter& JsonWriter::end_object() {
  out_ += '}';
  --depth_;
  return *this;
}

JsonWriter& JsonWriter::begin_array() {
  value_prefix();
  out_ += '[';
  ++depth_;
  first_bits_ |= 1ull << depth_;
  return *this;
}

JsonWriter& JsonWriter::end_array() {
  out_ += ']';
  --depth_;
  return *this;
}

JsonWriter& JsonWriter::key(std::string_view k) {
  value_prefix();
  append_json_string(out_, k);
  out_ += ':';
  after_key_ = true;
  return *this;
}

namespace {

// A strict RFC 8259 recognizer (one value, whitespace around it). simdjson's DOM parser would do but
// refuses integers beyond 64 bits, which are JSON and which Python results hold (10**20).
class JsonChecker {
 public:
  explicit JsonChecker(std::string_view s) : s_(s) {}
  bool document() {
    skip_space();
    if (!value(0)) return false;
    skip_space();
    return i_ == s_.size();
  }

 private:
  static constexpr int kMaxDepth = 2048;  // above simdjson's 1024: what it reads, this takes

  bool more() const { return i_ < s_.size(); }
  bool at(char c) const { return i_ < s_.size() && s_[i_] == c; }
  bool digit() const { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; }
  void skip_space() {
    while (more() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool word(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool value(int depth) {
    if (!more()) return false;
    switch (s_[i_]) {
      case '{': return members(depth + 1, '}', true);
      case '[': return members(depth + 1, ']', false);
      case '"': return string();
      case 't': return word("true");
      case 'f': return word("false");
      case 'n': return word("null");
      default: return number();
    }
  }
  // An object's members or an array's elements, from the opening bracket to `close`.
  bool members(int depth, char close, bool keyed) {
    if (depth > kMaxDepth) return false;
    ++i_;
    skip_space();
    if (at(close)) return ++i_, true;
    for (;;) {
      if (keyed) {
        if (!at('"') || !string()) return false;
        skip_space();
        if (!at(':')) return false;
        ++i_;
        skip_space();
      }
      if (!value(depth)) return false;
      skip_space();
      if (at(close)) return ++i_, true;
      if (!at(',')) return false;
      ++i_;
      skip_space();
    }
  }
  bool string() {
    for (++i_; more();) {
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') return ++i_, true;
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++i_ >= s_.size()) return false;
        if (s_[i_] == 'u') {
          for (int k = 1; k <= 4; ++k) {
            if (i_ + k >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_ + k]))) return false;
          }
          i_ += 5;
        } else if (std::string_view("\"\\/bfnrt").find(s_[i_]) != std::string_view::npos) {
          ++i_;
        } else {
          return false;
        }
      } else if (c >= 0x80) {
        size_t n = utf8_sequence(s_, i_);
        if (n == 0) return false;
        i_ += n;
      } else {
        ++i_;
      }
    }
    return false;
  }
  bool digits() {
    size_t from = i_;
    while (digit()) ++i_;
    return i_ > from;
  }
  bool number() {
    if (at('-')) ++i_;
    if (at('0')) {
      ++i_;
    } else if (!digits()) {
      return false;
    }
    if (at('.')) {
      ++i_;
      if (!digits()) return false;
    }
    if (at('e') || at('E')) {
      ++i_;
      if (at('+') || at('-')) ++i_;
      if (!digits()) return false;
    }
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

bool is_json_value(std::string_view text) { return JsonChecker(text).document(); }

JsonWriter& JsonWriter::string(std::string_view v) {
  value_prefix();
  append_json_string(out_, v);
  return *this;
}

JsonWriter& JsonWriter::number(int64_t v) {
  value_prefix();
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::number_u(uint64_t v) {
  value_prefix();
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::number(double v) {
  value_prefix();
  if (!std::isfinite(v)) {
    out_ += "null";
    return *this;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out_.append(buf, r.ptr);
  return *this;
}

JsonWriter& JsonWriter::boolean(bool v) {
  value_prefix();
  out_ += v ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::null() {
  value_prefix();
  out_ += "null";
  return *this;
}

JsonWriter& JsonWriter::raw(std::string_view json) {
  value_prefix();
  out_ += json;
  return *this;
}

}  // namespace sp::api
