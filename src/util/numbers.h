// Whole numbers read from text others wrote (query parameters, serve flags, an image's
// /etc/passwd and config): decimal digits only; not a general parser.
#pragma once

#include <charconv>
#include <optional>
#include <string_view>
#include <system_error>

namespace sp {

// `s` as a T when it is decimal digits only (no sign, no space, no prefix) and fits in T;
// nullopt for anything else ("", "-1", "1.0", "0x10", " 1", a value past T's maximum).
template <typename T>
std::optional<T> parse_whole(std::string_view s) {
  if (s.empty()) return std::nullopt;
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace sp
