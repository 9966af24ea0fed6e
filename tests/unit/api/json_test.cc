// Tests for api/json: escaping of control characters and invalid UTF-8, writer commas.
#include "api/json.h"

#include <doctest/doctest.h>

#include <cmath>
#include <simdjson.h>

namespace sp::api {
namespace {

std::string esc(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

TEST_CASE("control characters and quotes are escaped") {
  CHECK(esc("a\"b\\c") == R"("a\"b\\c")");
  CHECK(esc("\n\r\t\b\f") == R"("\n\r\t\b\f")");
  CHECK(esc(std::string("\x00\x01\x1f", 3)) == R"("\u0000\u0001\u001f")");
  CHECK(esc("\x7f") == "\"\x7f\"");
}

TEST_CASE("valid UTF-8 passes through, invalid bytes become U+FFFD") {
  CHECK(esc("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80") == "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"");
  CHECK(esc("\xff") == R"("\ufffd")");
  CHECK(esc("\xc3") == R"("\ufffd")");             // truncated
  CHECK(esc("\xc0\xaf") == R"("\ufffd\ufffd")");   // overlong
  CHECK(esc("\xed\xa0\x80") == R"("\ufffd\ufffd\ufffd")");  // surrogate
  CHECK(esc("\xf4\x90\x80\x80") == R"("\ufffd\ufffd\ufffd\ufffd")");  // above U+10FFFF
  CHECK(esc("a\xe2\x82") == R"("a\ufffd\ufffd")");
}

TEST_CASE("every byte string gives JSON that simdjson reads back") {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  std::string doc;
  JsonWriter w(doc);
  w.begin_object().key("s").string(all).end_object();
  simdjson::ondemand::parser p;
  simdjson::padded_string padded(doc);
  auto parsed = p.iterate(padded);
  std::string_view back;
  REQUIRE(parsed["s"].get_string().get(back) == simdjson::SUCCESS);
  CHECK(back.substr(0, 0x7f + 1) == all.substr(0, 0x7f + 1));
}

TEST_CASE("is_json_value takes exactly one JSON value") {
  for (const char* ok : {"null", "1", "-2.5e3", "\"\"", "\"a\\u00e9\"", " [1, {\"a\": null}] ", "{}", "true", "0", "-0.0E+1",
                         "100000000000000000000", "-123456789012345678901234567890", "1e400", "\"\\ud800\"",
                         "\"h\xc3\xa9 \\/\\b\\f\\n\\r\\t\\\"\"", "[[],{\"\":[]}]"}) {
    CHECK_MESSAGE(is_json_value(ok), ok);
  }
  for (const char* bad : {"", " ", "1 2", "\"a\",\"status\":\"x\"", "{", "nul", "'a'", "[1,]", "NaN", "\"\xff\"", "01", "-",
                          "1.", ".5", "+1", "1e", "\"\\u12\"", "\"\\x\"", "\"a\nb\"", "{\"a\" 1}", "{1:2}", "[1 2]", "\"open"}) {
    CHECK_MESSAGE(!is_json_value(bad), bad);
  }
  CHECK(is_json_value(std::string(2000, '[') + std::string(2000, ']')));
  CHECK_FALSE(is_json_value(std::string(3000, '[') + std::string(3000, ']')));  // bounded nesting
}

TEST_CASE("writer places commas and nests") {
  std::string out;
  JsonWriter w(out);
  w.begin_object();
  w.key("a").number(int64_t{1});
  w.key("b").begin_array().string("x").boolean(true).null().number(1.5).end_array();
  w.key("c").begin_object().end_object();
  w.key("d").number(std::nan(""));
  w.key("e").raw("[1,2]");
  w.end_object();
  CHECK(out == R"({"a":1,"b":["x",true,null,1.5],"c":{},"d":null,"e":[1,2]})");
}

}  // namespace
}  // namespace sp::api
