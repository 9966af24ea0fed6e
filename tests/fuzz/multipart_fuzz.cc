// multipart/form-data bodies as a client may upload them, through MultipartStream (the file
// upload route's parser, src/api/file_upload.cc). Input: one byte choosing how the body is cut,
// one byte n, n bytes of Content-Type parameters (the boundary comes from them as the route takes
// it), then the body. Checks, besides "no crash":
//  - a body fed in pieces gives the same parts, data and verdict as fed at once;
//  - a boundary is 1 to 70 bytes;
//  - where the body opens with its delimiter (no preamble), the stream agrees with the whole-body
//    parser parse_multipart on the verdict and on every part.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "api/multipart.h"
#include "fuzz_split.h"

using namespace sp::api;
using sp::fuzz::check;

namespace {

struct Recorder : MultipartStream::Events {
  std::vector<std::string> parts;
  bool open = false;
  void on_part_begin(const MultipartPart& p) override {
    check(!open, "a part begins after the previous one ended");
    check(p.data.empty(), "a part begins without data");
    open = true;
    parts.push_back(std::string(p.name) + "|" + std::string(p.filename) + "|" + std::string(p.content_type) + "|");
  }
  void on_part_data(std::string_view data) override {
    check(open, "data inside a part");
    check(!data.empty(), "no empty data events");
    parts.back().append(data);
  }
  void on_part_end() override {
    check(open, "a part ends after it began");
    open = false;
  }
};

// The parts and the verdict ("ok", or where it failed).
std::vector<std::string> stream(std::string_view boundary, const std::vector<std::string_view>& pieces) {
  Recorder r;
  MultipartStream s(boundary, &r);
  for (std::string_view piece : pieces) {
    auto st = s.feed(piece);
    if (!st.ok()) {
      r.parts.push_back("error");
      return r.parts;
    }
  }
  r.parts.push_back(s.finish().ok() ? "ok" : "unfinished");
  return r.parts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t n = data[1];
  if (size < 2 + n) return 0;
  std::string content_type = "multipart/form-data; " + std::string(in.substr(2, n));
  std::string_view body = in.substr(2 + n);
  auto b = multipart_boundary(content_type);
  if (!b.ok()) return 0;
  std::string_view boundary = b.value();
  check(!boundary.empty() && boundary.size() <= 70, "a boundary is 1 to 70 bytes");

  std::vector<std::string_view> whole;
  if (!body.empty()) whole.push_back(body);
  std::vector<std::string> a = stream(boundary, whole);
  std::vector<std::string> c = stream(boundary, sp::fuzz::split(body, data[0]));
  sp::fuzz::check_same(a, c, "the same parts whether the body comes at once or in pieces");

  std::string delim = "--" + std::string(boundary);
  if (body.substr(0, delim.size()) == delim) {
    auto ref = parse_multipart(body, boundary);
    bool stream_ok = a.back() == "ok";
    if (ref.ok() && stream_ok) {
      std::vector<std::string> want;
      for (const MultipartPart& p : ref.value())
        want.push_back(std::string(p.name) + "|" + std::string(p.filename) + "|" + std::string(p.content_type) + "|" +
                       std::string(p.data));
      want.push_back("ok");
      check(want == a, "the stream and the whole-body parser find the same parts");
    } else {
      check(ref.ok() == stream_ok, "the stream and the whole-body parser agree on the verdict");
    }
  }
  return 0;
}
