// Tests for the pure helpers of the session routes: file-name rules, content types, bearer tokens.
#include <doctest/doctest.h>

#include "api/file_routes.h"
#include "api/session_routes.h"

namespace sp::api {
namespace {

TEST_CASE("file names follow API.md section 4") {
  CHECK(clean_file_name("a.csv", false).value() == "a.csv");
  CHECK(clean_file_name("/mnt/data/a.csv", false).value() == "a.csv");
  CHECK(clean_file_name("/mnt/data/sub//x/./y.txt", false).value() == "sub/x/y.txt");
  CHECK(clean_file_name("/mnt/data", true).value().empty());
  CHECK(clean_file_name("", true).value().empty());
  CHECK_FALSE(clean_file_name("", false).has_value());
  CHECK_FALSE(clean_file_name("/etc/passwd", false).has_value());
  CHECK_FALSE(clean_file_name("/mnt/database/x", false).has_value());
  CHECK_FALSE(clean_file_name("a/../b", false).has_value());
  CHECK_FALSE(clean_file_name("..", true).has_value());
  CHECK_FALSE(clean_file_name(std::string("a\0b", 3), false).has_value());
  CHECK_FALSE(clean_file_name(std::string(256, 'x'), false).has_value());
  CHECK(clean_file_name(std::string(255, 'x'), false).has_value());
}

TEST_CASE("content types by extension") {
  CHECK(content_type_for("a.CSV") == "text/csv");
  CHECK(content_type_for("plot.png") == "image/png");
  CHECK(content_type_for("noext") == "application/octet-stream");
  CHECK(content_type_for("archive.tar.unknown") == "application/octet-stream");
}

TEST_CASE("bearer tokens") {
  std::vector<std::string> keys = {"k1", "longer-key"};
  CHECK(token_matches("Bearer k1", keys));
  CHECK(token_matches("bearer longer-key", keys));
  CHECK_FALSE(token_matches("Bearer k", keys));
  CHECK_FALSE(token_matches("Bearer k10", keys));
  CHECK_FALSE(token_matches("Basic k1", keys));
  CHECK_FALSE(token_matches("Bearer ", keys));
  CHECK_FALSE(token_matches("", keys));
  CHECK_FALSE(token_matches("Bearer k1", {}));
}

}  // namespace
}  // namespace sp::api
