// LogLines: line splitting, neutralising and rate limiting of container output (see log_lines.h).
#include "container/log_lines.h"

#include <algorithm>

namespace sp::container {

LogLines::LogLines(uint32_t per_second, uint64_t now_ms)
    : per_second_(per_second), tokens_(2.0 * per_second), last_ms_(now_ms) {}

void LogLines::feed(std::string_view bytes, uint64_t now_ms, const Emit& emit) {
  for (char c : bytes) {
    if (c == '\n') {
      end_line(now_ms, emit);
      continue;
    }
    if (cut_) continue;
    if (line_.size() == kMaxLine) {
      line_ += "...";
      cut_ = true;
      continue;
    }
    auto u = static_cast<unsigned char>(c);
    line_ += (u < 0x20 && c != '\t' && c != '\r') || u == 0x7f ? '?' : c;
  }
}

namespace {
// A '\r' right before the end is part of the line ending; any other is a control byte.
void tidy(std::string& line, bool cut) {
  if (!cut && !line.empty() && line.back() == '\r') line.pop_back();
  std::replace(line.begin(), line.end(), '\r', '?');
}
}  // namespace

void LogLines::end_line(uint64_t now_ms, const Emit& emit) {
  tidy(line_, cut_);
  if (now_ms > last_ms_) {
    tokens_ = std::min(2.0 * per_second_, tokens_ + static_cast<double>(now_ms - last_ms_) * per_second_ / 1000.0);
    last_ms_ = now_ms;
  }
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    report_dropped(emit);
    ++lines_;
    emit(line_);
  } else {
    ++dropped_;
    ++unreported_;
  }
  line_.clear();
  cut_ = false;
}

void LogLines::report_dropped(const Emit& emit) {
  if (unreported_ == 0) return;
  emit("[" + std::to_string(unreported_) + (unreported_ == 1 ? " line" : " lines") + " dropped: over the log rate]");
  unreported_ = 0;
}

void LogLines::finish(const Emit& emit) {
  if (!line_.empty()) {
    tidy(line_, cut_);
    ++lines_;
    emit(line_);
    line_.clear();
    cut_ = false;
  }
  report_dropped(emit);
}

}  // namespace sp::container
