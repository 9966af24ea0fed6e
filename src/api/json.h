// JSON output (a small writer with correct escaping) and helpers over simdjson for input.
// The writer never fails: invalid UTF-8 in a string becomes U+FFFD, control characters become \u00XX.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sp::api {

// Appends `s` as a JSON string literal, quotes included.
void append_json_string(std::string& out, std::string_view s);

// True when `text` is exactly one JSON value (UTF-8, whitespace around it allowed). For JSON that
// comes from a sandbox and is written out with JsonWriter::raw.
bool is_json_value(std::string_view text);

// A streaming writer into a caller-owned string; commas are placed for the caller.
class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);
  JsonWriter& string(std::string_view v);
  JsonWriter& number(int64_t v);
  JsonWriter& number_u(uint64_t v);
  JsonWriter& number(double v);  // NaN and infinities are written as null
  JsonWriter& boolean(bool v);
  JsonWriter& null();
  JsonWriter& raw(std::string_view json);  // an already-valid JSON value (is_json_value when untrusted)

 private:
  void value_prefix();
  std::string& out_;
  uint64_t first_bits_ = 1;  // bit d: nothing written yet at depth d
  int depth_ = 0;
  bool after_key_ = false;
};

}  // namespace sp::api
