// How a pool's Python template lays out its memory before it serves forks; the code is template_memory.cc (loaded into the template), not the spawner.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace sp {

enum class TemplateMemory : uint8_t {
  // Its private anonymous memory moved into one memfd, sealed, and mapped back copy-on-write:
  // a fork copies no page-table entries for it; clones fault pages in as they read them.
  kShared,
  // Python's arenas in one region, then MADV_COLLAPSE: one entry per 2 MiB huge page. Gave new
  // sessions' first executes a slower tail while the refill ran (bench/results/sessions-2026-11-29.md).
  kHugePages,
  // As Python left it: a fork copies one entry per resident 4 KiB page.
  kPlain,
};

// The names of `serve --template-memory` and of template.py's --memory.
constexpr const char* template_memory_name(TemplateMemory m) {
  switch (m) {
    case TemplateMemory::kShared: return "shared";
    case TemplateMemory::kHugePages: return "huge";
    case TemplateMemory::kPlain: return "plain";
  }
  return "shared";
}

constexpr std::optional<TemplateMemory> parse_template_memory(std::string_view name) {
  for (TemplateMemory m : {TemplateMemory::kShared, TemplateMemory::kHugePages, TemplateMemory::kPlain})
    if (name == template_memory_name(m)) return m;
  return std::nullopt;
}

}  // namespace sp
