// LogLines: a container's stdout/stderr bytes → lines for the server's log; not the reading of the
// pipe nor the logging itself (container_source.cc does both).
//
// Per container: the stream is cut at '\n' (a '\r' before it is dropped); control bytes other than
// tab become '?', so a container cannot forge log lines or send terminal escapes; a line longer than
// kMaxLine is cut there (the rest, up to its '\n', is dropped and the line ends with "..."). A token
// bucket limits the rate: `per_second` lines a second, bursts of up to 2 s worth; lines over it are
// counted, not kept, and the next line let through is preceded by "[N lines dropped]".
//
// Threading: one owner (the loop thread). Time is passed in (milliseconds, any monotonic origin).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace sp::container {

class LogLines {
 public:
  static constexpr size_t kMaxLine = 2048;
  using Emit = std::function<void(std::string_view line)>;

  LogLines(uint32_t per_second, uint64_t now_ms);

  // Bytes read from the container at `now_ms`: calls `emit` for each complete line let through.
  void feed(std::string_view bytes, uint64_t now_ms, const Emit& emit);
  // The stream ended: the last line without '\n', if any, then the count of dropped lines not yet
  // reported (neither is rate-limited).
  void finish(const Emit& emit);

  // True when no token is left: the next line would be dropped (unless time passes).
  bool over_rate() const { return tokens_ < 1.0; }
  uint64_t lines() const { return lines_; }      // lines emitted (the dropped notes not counted)
  uint64_t dropped() const { return dropped_; }  // lines over the rate

 private:
  void end_line(uint64_t now_ms, const Emit& emit);
  void report_dropped(const Emit& emit);

  uint32_t per_second_;
  double tokens_;
  uint64_t last_ms_;
  std::string line_;
  bool cut_ = false;  // line_ reached kMaxLine: the rest of this line is skipped
  uint64_t lines_ = 0, dropped_ = 0, unreported_ = 0;
};

}  // namespace sp::container
