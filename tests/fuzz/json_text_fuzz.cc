// JSON text in both directions. A sandbox's result is checked with is_json_value before the
// server embeds it in an answer (JsonWriter::raw), and every string the server writes (a cell's
// stdout and stderr, file names, error messages) goes through append_json_string. Input: any
// bytes. Checks, besides "no crash":
//  - is_json_value takes what simdjson's DOM parser reads, and refuses nothing else but what
//    simdjson cannot hold; a value it takes, embedded in an object, keeps that object one document;
//  - append_json_string always gives one JSON string, and reading it back gives the input when the
//    input is valid UTF-8, and valid UTF-8 in any case.
#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "api/json.h"
#include "fuzz_split.h"

using sp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  static simdjson::dom::parser parser;

  // is_json_value against simdjson's DOM parser: what simdjson reads, it takes; what it takes and
  // simdjson refuses is only what simdjson cannot hold (integers beyond 64 bits, numbers beyond a
  // double, escaped lone surrogates) or nests deeper than simdjson's 1024.
  bool accepted = sp::api::is_json_value(in);
  simdjson::dom::element e;
  simdjson::error_code dom = parser.parse(simdjson::padded_string(in)).get(e);
  if (dom == simdjson::SUCCESS) check(accepted, "what simdjson reads is a JSON value");
  if (accepted && dom != simdjson::SUCCESS) {
    check(dom == simdjson::NUMBER_ERROR || dom == simdjson::STRING_ERROR || dom == simdjson::DEPTH_ERROR,
          "is_json_value takes only what simdjson cannot hold");
  }
  if (accepted) {
    std::string doc;
    sp::api::JsonWriter w(doc);
    w.begin_object().key("result").raw(in).key("after").number(int64_t{1}).end_object();
    check(sp::api::is_json_value(doc), "an accepted value keeps the answer one JSON document");
    if (dom == simdjson::SUCCESS) {
      int64_t after = 0;
      check(parser.parse(simdjson::padded_string(doc)).get(e) == simdjson::SUCCESS && e["after"].get(after) == simdjson::SUCCESS &&
                after == 1,
            "the keys after it are intact");
    }
  }

  std::string lit;
  sp::api::append_json_string(lit, in);
  check(sp::api::is_json_value(lit), "an escaped string is a JSON value");
  std::string_view back;
  simdjson::dom::element s;
  check(parser.parse(simdjson::padded_string(lit)).get(s) == simdjson::SUCCESS && s.get(back) == simdjson::SUCCESS,
        "an escaped string reads back as a string");
  check(simdjson::validate_utf8(back.data(), back.size()), "what reads back is UTF-8");
  if (simdjson::validate_utf8(in.data(), in.size())) check(back == in, "valid UTF-8 comes back unchanged");
  return 0;
}
