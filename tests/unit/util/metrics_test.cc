// Tests for util/metrics: exposition lines and cumulative histogram buckets.
#include "util/metrics.h"

#include <doctest/doctest.h>

namespace sp {
namespace {

TEST_CASE("values and label escaping") {
  std::string out;
  metric_value(out, "x_total", "a=\"b\"", uint64_t{3});
  CHECK(out == "x_total{a=\"b\"} 3\n");
  std::string l;
  append_label_value(l, "a\"b\\c\nd");
  CHECK(l == "a\\\"b\\\\c\\nd");
}

TEST_CASE("histogram buckets are cumulative and end with +Inf") {
  LatencyHistogram h;
  h.observe_ns(10'000);          // 10 µs
  h.observe_ns(700'000);         // 0.7 ms
  h.observe_ns(120'000'000'000);  // 120 s: only +Inf
  std::string out;
  h.render(out, "d", "r=\"x\"");
  CHECK(out.find("d_bucket{r=\"x\",le=\"2.5e-05\"} 1\n") != std::string::npos);
  CHECK(out.find("d_bucket{r=\"x\",le=\"0.001\"} 2\n") != std::string::npos);
  CHECK(out.find("d_bucket{r=\"x\",le=\"60\"} 2\n") != std::string::npos);
  CHECK(out.find("d_bucket{r=\"x\",le=\"+Inf\"} 3\n") != std::string::npos);
  CHECK(out.find("d_count{r=\"x\"} 3\n") != std::string::npos);
}

}  // namespace
}  // namespace sp
