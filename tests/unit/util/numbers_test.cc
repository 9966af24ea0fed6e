// Tests for util/numbers.h: the whole-number parser for query parameters, flags and image files.
#include "util/numbers.h"

#include <doctest/doctest.h>

#include <cstdint>

namespace sp {
namespace {

TEST_CASE("parse_whole: decimal digits only, within the type") {
  CHECK(parse_whole<uint64_t>("0").value() == 0);
  CHECK(parse_whole<uint64_t>("300").value() == 300);
  CHECK(parse_whole<uint64_t>("007").value() == 7);
  CHECK(parse_whole<uint64_t>("18446744073709551615").value() == UINT64_MAX);
  for (const char* bad : {"", "-1", "+1", "1.0", "0x10", " 1", "1 ", "1e3", "abc", "18446744073709551616",
                          "99999999999999999999999"})
    CHECK_MESSAGE(!parse_whole<uint64_t>(bad).has_value(), bad);
  CHECK(parse_whole<uint32_t>("4294967295").value() == UINT32_MAX);
  CHECK_FALSE(parse_whole<uint32_t>("4294967296").has_value());
}

}  // namespace
}  // namespace sp
