// Tests for api/params: percent-decoding, query lookup, identifier rules.
#include "api/params.h"

#include <doctest/doctest.h>

namespace sp::api {
namespace {

TEST_CASE("percent-decoding") {
  CHECK(percent_decode("a%2Fb").value() == "a/b");
  CHECK(percent_decode("%41%6a").value() == "Aj");
  CHECK(percent_decode("plain+text").value() == "plain+text");
  CHECK_FALSE(percent_decode("%").has_value());
  CHECK_FALSE(percent_decode("%4").has_value());
  CHECK_FALSE(percent_decode("%zz").has_value());
  CHECK_FALSE(percent_decode("a%00b").has_value());
}

TEST_CASE("query parameters") {
  std::string_view q = "api-version=2024&identifier=my%7Bid%7D&x&path=";
  CHECK(query_param(q, "identifier").value() == "my{id}");
  CHECK(query_param(q, "api-version").value() == "2024");
  CHECK(query_param(q, "x").value() == "");
  CHECK(query_param(q, "path").value() == "");
  CHECK_FALSE(query_param(q, "missing").has_value());
  CHECK_FALSE(query_param(q, "ident").has_value());
  CHECK_FALSE(query_param("identifier=%G1", "identifier").has_value());
}

TEST_CASE("identifiers") {
  CHECK(valid_identifier("abcd"));
  CHECK(valid_identifier("a|-&^%$#(){}[];<>_:.@~"));
  CHECK(valid_identifier(std::string(128, 'x')));
  CHECK_FALSE(valid_identifier("abc"));
  CHECK_FALSE(valid_identifier(std::string(129, 'x')));
  CHECK_FALSE(valid_identifier("has space"));
  CHECK_FALSE(valid_identifier("slash/no"));
  CHECK_FALSE(valid_identifier("quote\"no"));
  CHECK_FALSE(valid_identifier("caf\xc3\xa9"));
  CHECK_FALSE(valid_identifier("plus+no"));
}

}  // namespace
}  // namespace sp::api
