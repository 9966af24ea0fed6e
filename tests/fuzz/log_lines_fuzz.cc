// A custom container's stdout and stderr as they reach the server's log (src/container/log_lines.cc):
// the user's image writes whatever it likes. Input: one byte choosing how the bytes are cut, one
// choosing the rate (lines a second), then the bytes. Checks, besides "no crash":
//  - no emitted line holds a control byte other than tab (no forged log lines, no terminal
//    escapes), and none is longer than kMaxLine plus the "..." that marks a cut;
//  - the bytes cut in pieces give the same lines, and the same counts of lines emitted and dropped,
//    as at once (all fed at one instant, so a rate lets the same lines through).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "container/log_lines.h"
#include "fuzz_split.h"

using sp::container::LogLines;
using sp::fuzz::check;

namespace {

std::vector<std::string> run(const std::vector<std::string_view>& pieces, uint32_t rate) {
  std::vector<std::string> out;
  LogLines l(rate, 1000);
  auto emit = [&out](std::string_view line) {
    for (unsigned char c : line) check(c >= 0x20 || c == '\t', "no control bytes in a log line");
    check(line.size() <= LogLines::kMaxLine + 3, "a log line is at most kMaxLine and '...'");
    out.emplace_back(line);
  };
  for (std::string_view piece : pieces) l.feed(piece, 1000, emit);
  l.finish(emit);
  out.push_back("lines " + std::to_string(l.lines()) + " dropped " + std::to_string(l.dropped()));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  uint32_t rate = data[1] & 0x80 ? 1u << 20 : data[1] % 8;  // unlimited in practice, or 0-7 a second
  sp::fuzz::same_at_once_and_in_pieces(bytes, data[0], [rate](const auto& pieces) { return run(pieces, rate); },
                                       "the same log lines whether the bytes come at once or in pieces");
  return 0;
}
