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

TEST_CASE("a quoted parameter may hold ';'") {
  // A file named "a;b=c.txt" was read as filename "\"a" (and then refused: no filename). Found by tests/fuzz/api_fuzz.py.
  MultipartPart part;
  REQUIRE(parse_part_headers("Content-Disposition: form-data; name=\"file\"; filename=\"a;b=c.txt\"", &part).ok());
  CHECK(part.name == "file");
  CHECK(part.filename == "a;b=c.txt");
  CHECK(multipart_boundary("multipart/form-data; boundary=\"x;y\"; charset=utf-8").value() == "x;y");
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

namespace sp::api {
namespace {

struct Collect : MultipartStream::Events {
  std::vector<std::pair<std::string, std::string>> parts;  // (filename, data)
  int ends = 0;
  void on_part_begin(const MultipartPart& p) override { parts.emplace_back(std::string(p.filename), ""); }
  void on_part_data(std::string_view d) override { parts.back().second.append(d); }
  void on_part_end() override { ++ends; }
};

TEST_CASE("the stream parser matches the whole-body parser for every split") {
  std::string bin;
  for (int i = 0; i < 300; ++i) bin += static_cast<char>(i * 7);
  bin += "\r\n-B\n--B\r--B\r\n-";  // near-delimiters inside the data
  std::string body = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\r\n" + bin +
                     "\r\n--B\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\nv\r\n--B--\r\nepilogue";
  for (size_t step : {1, 2, 3, 5, 13, 64, 1000}) {
    Collect c;
    MultipartStream s("B", &c);
    for (size_t off = 0; off < body.size(); off += step) REQUIRE(s.feed(std::string_view(body).substr(off, step)).ok());
    CHECK(s.finish().ok());
    REQUIRE(c.parts.size() == 2);
    CHECK(c.parts[0].first == "x.bin");
    CHECK(c.parts[0].second == bin);
    CHECK(c.parts[1].second == "v");
    CHECK(c.ends == 2);
  }
}

TEST_CASE("the stream parser refuses truncated and malformed bodies") {
  Collect c;
  MultipartStream s("B", &c);
  REQUIRE(s.feed("--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\npartial").ok());
  CHECK_FALSE(s.finish().ok());
  Collect d;
  MultipartStream t("B", &d);
  CHECK_FALSE(t.feed("--B\r\nno colon here\r\n\r\nx\r\n--B--").ok());
  Collect e;
  MultipartStream u("B", &e);
  CHECK_FALSE(u.feed(std::string(40000, 'h')).ok());  // no boundary in a long preamble
}

}  // namespace
}  // namespace sp::api
