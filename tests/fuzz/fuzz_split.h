// Helpers shared by the fuzz targets: cutting one input into the pieces a socket might deliver,
// and failing loudly when a target's own check does not hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace sp::fuzz {

// Cuts `data` into pieces whose lengths (1 to 16, or the rest at once now and then) follow from
// `seed`: the same input always arrives the same way, and the fuzzer can vary the cuts.
inline std::vector<std::string_view> split(std::string_view data, uint8_t seed) {
  std::vector<std::string_view> pieces;
  uint32_t s = seed * 2654435761u + 1;
  while (!data.empty()) {
    s = s * 1103515245u + 12345u;
    size_t n = (s >> 16) % 17 == 0 ? data.size() : 1 + (s >> 16) % 16;
    if (n > data.size()) n = data.size();
    pieces.push_back(data.substr(0, n));
    data.remove_prefix(n);
  }
  return pieces;
}

// A check of the target failed: the input shows a bug even though nothing crashed.
[[noreturn]] inline void fail(const char* what) {
  fprintf(stderr, "fuzz: check failed: %s\n", what);
  abort();
}

inline void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

// Two runs that must agree (bytes at once, bytes in pieces): on a difference, both are printed.
inline void check_same(const std::vector<std::string>& a, const std::vector<std::string>& b, const char* what) {
  if (a == b) return;
  for (const auto* run : {&a, &b}) {
    fprintf(stderr, "fuzz: %s:\n", run == &a ? "at once" : "in pieces");
    for (const std::string& e : *run) fprintf(stderr, "  %s\n", e.c_str());
  }
  fail(what);
}

// Runs `parse` (pieces -> record) over `bytes` at once and cut as `seed` says, and checks that
// both give the same record: a parser must not depend on how a socket delivers the bytes.
template <class Parse>
void same_at_once_and_in_pieces(std::string_view bytes, uint8_t seed, Parse parse, const char* what) {
  std::vector<std::string_view> whole;
  if (!bytes.empty()) whole.push_back(bytes);
  check_same(parse(whole), parse(split(bytes, seed)), what);
}

}  // namespace sp::fuzz
