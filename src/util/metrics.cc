// Prometheus text format writing and the latency histogram.
#include "util/metrics.h"

#include <charconv>

namespace sp {

const double LatencyHistogram::kBoundsSeconds[kBuckets] = {
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,    0.05,    0.1,    0.25,    0.5,    1.0,   2.5,    10.0,  60.0};

void metric_header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

static void name_labels(std::string& out, std::string_view name, std::string_view labels) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
}

void metric_value(std::string& out, std::string_view name, std::string_view labels, uint64_t value) {
  name_labels(out, name, labels);
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, r.ptr);
  out += '\n';
}

void metric_value(std::string& out, std::string_view name, std::string_view labels, double value) {
  name_labels(out, name, labels);
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, r.ptr);
  out += '\n';
}

void append_label_value(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

void LatencyHistogram::observe_ns(uint64_t ns) {
  ++count_;
  sum_ns_ += ns;
  double s = static_cast<double>(ns) * 1e-9;
  for (int i = 0; i < kBuckets; ++i) {
    if (s <= kBoundsSeconds[i]) {
      ++buckets_[i];
      return;
    }
  }
}

void LatencyHistogram::render(std::string& out, std::string_view name, std::string_view labels) const {
  std::string bucket_name = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  char le[32];
  for (int i = 0; i < kBuckets; ++i) {
    cumulative += buckets_[i];
    auto r = std::to_chars(le, le + sizeof le, kBoundsSeconds[i]);
    std::string l(labels);
    if (!l.empty()) l += ',';
    l += "le=\"";
    l.append(le, r.ptr);
    l += '"';
    metric_value(out, bucket_name, l, cumulative);
  }
  std::string l(labels);
  if (!l.empty()) l += ',';
  l += "le=\"+Inf\"";
  metric_value(out, bucket_name, l, count_);
  metric_value(out, std::string(name) + "_sum", labels, static_cast<double>(sum_ns_) * 1e-9);
  metric_value(out, std::string(name) + "_count", labels, count_);
}

}  // namespace sp
