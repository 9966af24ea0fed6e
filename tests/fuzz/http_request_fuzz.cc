// HTTP/1.1 requests as any client may send them, through RequestParser the way a connection drives
// it (src/http/connection.cc: head, body limit, body, next message on the same bytes). Input: one
// byte choosing how the bytes are cut, one choosing the body handling (stored, discarded or
// streamed to a sink; a small or a large limit), then the bytes. Small URL and header limits so
// that short inputs reach them. Checks, besides "no crash":
//  - bytes fed in pieces give the same requests and bodies as fed at once, and fail where they do;
//  - a head's views are consistent (path and query are the target's parts, at most kMaxHeaders
//    headers) and readable until the message ends, and after an error; a stored body respects its
//    limit;
//  - an error is one of the statuses the server answers for a malformed request.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_split.h"
#include "http/parser.h"

using namespace sp::http;
using sp::fuzz::check;

namespace {

struct Sink : BodySink {
  std::string data;
  void on_body_data(std::string_view chunk) override { data.append(chunk); }
};

std::string describe_head(const Request& r) {
  check(r.target.substr(0, r.path.size()) == r.path, "path is the start of the target");
  if (!r.query.empty()) {
    check(r.target.size() == r.path.size() + 1 + r.query.size() && r.target[r.path.size()] == '?',
          "query is what follows the '?'");
  }
  check(r.headers.size() <= kMaxHeaders, "at most kMaxHeaders headers");
  std::string s = std::string(r.method_name) + " " + std::string(r.target) + " 1." + std::to_string(r.http_minor);
  for (const Header& h : r.headers) s += "|" + std::string(h.name) + ":" + std::string(h.value);
  s += r.keep_alive ? " ka" : " close";
  s += r.chunked ? " chunked" : "";
  s += r.has_content_length ? " cl=" + std::to_string(r.content_length) : "";
  s += r.upgrade ? " upgrade" : "";
  s += r.expect_continue ? " continue" : "";
  return s;
}

std::vector<std::string> parse(const std::vector<std::string_view>& pieces, uint8_t mode) {
  ParserLimits limits;
  limits.max_url_bytes = 200;
  limits.max_header_bytes = 600;
  RequestParser p(limits);
  const uint64_t body_limit = (mode & 0x80) ? 12 : 1 << 20;
  const int handling = (mode & 0x7f) % 3;  // 0 store, 1 discard, 2 sink
  Sink sink;
  std::vector<std::string> seen;
  std::string head;
  for (std::string_view piece : pieces) {
    const char* data = piece.data();
    size_t len = piece.size();
    for (;;) {
      FeedResult r = p.feed(data, len);
      check(r.consumed <= len, "consumed within the bytes given");
      data += r.consumed;
      len -= r.consumed;
      if (r.event == ParseEvent::kNeedMore) {
        check(len == 0, "more is needed only when everything was consumed");
        break;
      }
      if (r.event == ParseEvent::kError) {
        int st = p.error_status();
        check(st == 400 || st == 413 || st == 414 || st == 431 || st == 501 || st == 505,
              "a malformed request gets a 4xx/5xx the server answers");
        // The error answer and its log line are formed from request(): before its head is complete
        // it shows nothing of the message before (whose views may dangle), and what it shows is
        // readable (ASan).
        const Request& req = p.request();
        if (!p.head_done()) {
          check(req.target.empty() && req.path.empty() && req.query.empty() && req.headers.empty(),
                "an error before the head shows nothing of the message before");
        }
        std::string touched = std::string(req.method_name) + std::string(req.target);
        for (const Header& h : req.headers) touched += std::string(h.name) + std::string(h.value);
        // Which limit or syntax error is met first may depend on how the bytes arrive (a URL over
        // its limit and a bad byte in it: 414 or 400); that it is an error may not.
        seen.push_back("error");
        return seen;
      }
      if (r.event == ParseEvent::kHead) {
        check(p.head_done(), "head_done after the head");
        head = describe_head(p.request());
        sink.data.clear();
        if (!p.set_body_limit(body_limit, handling == 0, handling == 2 ? &sink : nullptr)) {
          check(p.error_status() == 413, "a refused Content-Length is a 413");
          seen.push_back(head + " error");
          return seen;
        }
        continue;
      }
      // kComplete: the head's views are still valid, and the body is all there.
      const Request& req = p.request();
      check(describe_head(req) == head, "the head is unchanged by its body");
      std::string body = handling == 0 ? std::string(req.body) : handling == 2 ? sink.data : std::string();
      if (handling == 0) {
        check(req.body.size() <= body_limit, "a stored body within its limit");
        check(req.body_capacity >= req.body.size() + kBodyPadding, "the body is padded for simdjson");
      }
      seen.push_back(head + " body=" + body);
    }
  }
  seen.push_back(p.finish() ? "end clean" : "end cut");
  return seen;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  uint8_t mode = data[1];
  sp::fuzz::same_at_once_and_in_pieces(bytes, data[0], [mode](const auto& pieces) { return parse(pieces, mode); },
                                       "the same requests whether the bytes come at once or in pieces");
  return 0;
}
