// Interval map of mapped guest ranges.
#include "vmm/address_space.h"

#include <iterator>

namespace sp::vmm {

void AddressSpace::add(uint64_t start, uint64_t len) {
  if (len == 0) return;
  uint64_t end = start + len;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= start) {  // overlaps or touches the previous range: extend it
      start = prev->first;
      if (prev->second > end) end = prev->second;
      it = ranges_.erase(prev);
    }
  }
  while (it != ranges_.end() && it->first <= end) {
    if (it->second > end) end = it->second;
    it = ranges_.erase(it);
  }
  ranges_.emplace(start, end);
}

void AddressSpace::remove(uint64_t start, uint64_t len) {
  if (len == 0) return;
  uint64_t end = start + len;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) --it;
  while (it != ranges_.end() && it->first < end) {
    uint64_t s = it->first, e = it->second;
    if (e <= start) {
      ++it;
      continue;
    }
    it = ranges_.erase(it);
    if (s < start) ranges_.emplace(s, start);
    if (e > end) {
      ranges_.emplace(end, e);
      break;
    }
  }
}

bool AddressSpace::is_free(uint64_t start, uint64_t len) const {
  uint64_t end = start + len;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin() && std::prev(it)->second > start) return false;
  return it == ranges_.end() || it->first >= end;
}

bool AddressSpace::is_mapped(uint64_t start, uint64_t len) const {
  auto it = ranges_.upper_bound(start);
  if (it == ranges_.begin()) return len == 0;
  --it;
  return it->first <= start && it->second >= start + len;
}

uint64_t AddressSpace::find_free(uint64_t len) const {
  if (len == 0 || len > high_ - low_) return 0;
  uint64_t gap_end = high_;
  // Walk ranges from the top; each gap is [range end, gap_end).
  auto it = ranges_.lower_bound(high_);
  while (true) {
    uint64_t gap_start = low_;
    if (it != ranges_.begin()) {
      auto prev = std::prev(it);
      gap_start = prev->second > low_ ? prev->second : low_;
      if (prev->first >= high_) {  // range wholly above the window
        it = prev;
        continue;
      }
    }
    if (gap_end > gap_start && gap_end - gap_start >= len) return gap_end - len;
    if (it == ranges_.begin()) return 0;
    it = std::prev(it);
    gap_end = it->first < high_ ? it->first : high_;
    if (gap_end <= low_) return 0;
  }
}

uint64_t AddressSpace::mapped_bytes() const {
  uint64_t n = 0;
  for (const auto& [s, e] : ranges_) n += e - s;
  return n;
}

}  // namespace sp::vmm
