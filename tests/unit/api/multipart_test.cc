// Tests for api/multipart: well-formed bodies, binary data, and malformed ones.
#include "api/multipart.h"

#include <doctest/doctest.h>

#include <string>

namespace sp::api {
namespace {

TEST_CASE("boundary from Content-Type") {
  CHECK(multipart_boundary("multipart/form-data; boundary=abc123").value() == "abc123");
  CHECK(multipart_boundary("Multipart/Form-Data; charset=x; boundary=\"q q\"").value() == "q q");
  CHECK_FALSE(multipart_boundary("application/json").ok());
  CHECK_FALSE(multipart_boundary("multipart/form-data").ok());
}

TEST_CASE("parts with files, fields and binary data") {
  std::string bin("\x00\r\n--X\x01\xff", 8);
  std::string body = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n" + bin +
                     "\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ--\r\n";
  auto parts = parse_multipart(body, "XyZ");
  REQUIRE(parts.ok());
  REQUIRE(parts.value().size() == 2);
  CHECK(parts.value()[0].name == "file");
  CHECK(parts.value()[0].filename == "a.bin");
  CHECK(parts.value()[0].content_type == "application/octet-stream");
  CHECK(parts.value()[0].data == bin);
  CHECK(parts.value()[1].filename.empty());
  CHECK(parts.value()[1].data == "hello");
}

TEST_CASE("malformed bodies are errors") {
  for (const char* b : {"", "no boundary here", "--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nunterminated",
                        "--B\r\nbadheader\r\n\r\nx\r\n--B--", "--Bjunk", "--B\r\nContent-Disposition: attachment\r\n\r\nx\r\n--B--"}) {
    CAPTURE(b);
    CHECK_FALSE(parse_multipart(b, "B").ok());
  }
}

TEST_CASE("part count is bounded") {
  std::string body;
  for (int i = 0; i < 5; ++i) body += "--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n";
  body += "--B--";
  CHECK(parse_multipart(body, "B", 10).ok());
  CHECK_FALSE(parse_multipart(body, "B", 4).ok());
}

}  // namespace
}  // namespace sp::api
