// Bookkeeping of which guest user pages are mapped (image, brk, mmap regions, stack) and where a
// new mapping may go; pure data, no memory access (the syscall handlers zero and fill the pages).
#pragma once

#include <cstdint>
#include <cstddef>
#include <map>

namespace sp::vmm {

class AddressSpace {
 public:
  // Mappings without MAP_FIXED are placed top-down inside [low, high).
  void set_window(uint64_t low, uint64_t high) { low_ = low; high_ = high; }
  uint64_t window_low() const { return low_; }
  uint64_t window_high() const { return high_; }

  // Marks [start, start+len) mapped / unmapped; adjacent ranges are merged, overlaps split.
  void add(uint64_t start, uint64_t len);
  void remove(uint64_t start, uint64_t len);

  bool is_free(uint64_t start, uint64_t len) const;     // no byte of the range is mapped
  bool is_mapped(uint64_t start, uint64_t len) const;   // every byte of the range is mapped
  // Highest page-aligned start of a free range of len bytes inside the window, or 0 if none.
  uint64_t find_free(uint64_t len) const;

  uint64_t mapped_bytes() const;
  size_t range_count() const { return ranges_.size(); }

 private:
  std::map<uint64_t, uint64_t> ranges_;  // start -> end, disjoint, not adjacent
  uint64_t low_ = 0;
  uint64_t high_ = 0;
};

}  // namespace sp::vmm
