// Prometheus text exposition helpers and a fixed-bucket latency histogram; no registry, no labels
// parsing. Each component renders its own metrics with these. Histogram is loop-thread only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sp {

// "# HELP name help\n# TYPE name type\n"
void metric_header(std::string& out, std::string_view name, std::string_view type, std::string_view help);
// "name{labels} value\n"; `labels` is the inside of the braces (already escaped) or empty.
void metric_value(std::string& out, std::string_view name, std::string_view labels, uint64_t value);
void metric_value(std::string& out, std::string_view name, std::string_view labels, double value);
// Escapes a label value per the exposition format (backslash, quote, newline).
void append_label_value(std::string& out, std::string_view v);

// Latency histogram with fixed upper bounds from 25 µs to 60 s.
class LatencyHistogram {
 public:
  static constexpr int kBuckets = 18;
  static const double kBoundsSeconds[kBuckets];

  void observe_ns(uint64_t ns);
  // Writes the _bucket, _sum and _count series of `name` with `labels` (may be empty).
  void render(std::string& out, std::string_view name, std::string_view labels) const;
  uint64_t count() const { return count_; }

 private:
  uint64_t buckets_[kBuckets] = {};
  uint64_t count_ = 0;
  uint64_t sum_ns_ = 0;
};

}  // namespace sp
