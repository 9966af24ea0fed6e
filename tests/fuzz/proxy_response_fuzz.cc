// HTTP/1.1 answers as a custom container may send them, through ResponseParser the way the proxy
// drives it (src/proxy/proxy.cc: reset() before each request, feed, stop at an upgrade or an
// error). A container runs the user's image, so its bytes are untrusted. Input: one byte choosing
// how the bytes are cut, one whose low bit says whether the request was a HEAD request, then the
// bytes. Checks, besides "no crash":
//  - bytes fed in pieces give the same heads, bodies, ends and verdict as fed at once;
//  - a head's status is 101 or 200-999 (1xx interim answers are skipped), the answer to a HEAD
//    request, a 204 and a 304 have no body, every body piece falls between a head and its end;
//  - the header views of a delivered head stay readable after its answer ends (until reset()).
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_split.h"
#include "proxy/response_parser.h"

using namespace sp::proxy;
using sp::fuzz::check;

namespace {

struct Recorder : ResponseParser::Listener {
  std::vector<std::string> seen;
  bool head_request = false;
  bool in_body = false;
  int status = 0;
  void on_upstream_head(const UpstreamHead& h) override {
    check(!in_body, "a head does not interrupt a body");
    check(h.status == 101 || (h.status >= 200 && h.status <= 999), "a delivered status is final or 101");
    std::string s = "head " + std::to_string(h.status) + " 1." + std::to_string(h.http_minor);
    for (const auto& [name, value] : h.headers) s += "|" + std::string(name) + ":" + std::string(value);
    s += h.keep_alive ? " ka" : " close";
    if (h.has_content_length) s += " cl=" + std::to_string(h.content_length);
    if (h.chunked) s += " chunked";
    seen.push_back(s);
    status = h.status;
    in_body = true;
  }
  void on_upstream_body(std::string_view data) override {
    check(in_body, "body bytes after a head");
    check(!head_request, "no body in the answer to a HEAD request");
    check(status != 204 && status != 304, "no body in a 204 or a 304");
    if (seen.back().rfind("body ", 0) != 0) seen.push_back("body ");
    seen.back().append(data);
  }
  void on_upstream_complete() override {
    check(in_body, "an answer completes after its head");
    in_body = false;
    seen.push_back("complete");
  }
};

std::vector<std::string> parse(const std::vector<std::string_view>& pieces, uint8_t heads) {
  Recorder r;
  ResponseParser p(&r);
  r.head_request = heads & 1;
  p.reset(r.head_request);
  for (std::string_view piece : pieces) {
    while (!piece.empty()) {
      size_t consumed = 0;
      ResponseParser::Result res = p.feed(piece.data(), piece.size(), &consumed);
      if (res == ResponseParser::Result::kError) {
        check(p.error() != nullptr && p.error()[0] != '\0', "an error says why");
        r.seen.push_back("error");
        return r.seen;
      }
      if (res == ResponseParser::Result::kUpgrade) {
        check(consumed <= piece.size(), "an upgrade's head within the bytes given");
        check(p.head().status == 101, "an upgrade follows a 101");
        r.seen.push_back("upgrade");
        return r.seen;  // the rest is tunnel data
      }
      check(consumed == piece.size(), "kOk consumes everything");
      piece = {};
    }
  }
  if (!r.seen.empty() && r.seen.back() == "complete") {
    // Bytes after a whole answer are ignored until the next reset(); the head's views stay valid.
    std::string again;
    for (const auto& [name, value] : p.head().headers) again += "|" + std::string(name) + ":" + std::string(value);
    auto last_head = std::find_if(r.seen.rbegin(), r.seen.rend(), [](const std::string& e) { return e.rfind("head ", 0) == 0; });
    check(last_head != r.seen.rend() && last_head->find(again) != std::string::npos,
          "the head's views unchanged by what followed");
  }
  r.seen.push_back(p.finish() ? "end clean" : "end cut");
  return r.seen;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  uint8_t heads = data[1];
  sp::fuzz::same_at_once_and_in_pieces(bytes, data[0], [heads](const auto& pieces) { return parse(pieces, heads); },
                                       "the same answers whether the bytes come at once or in pieces");
  return 0;
}
