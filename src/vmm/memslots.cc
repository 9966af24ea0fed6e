// Chunked, on-demand memslot bookkeeping and the page-directory updates that go with it.
#include "vmm/memslots.h"

#include <algorithm>

#include "vmm/layout.h"
#include "vmm/x86.h"

namespace sp::vmm {

static_assert(kMaxMemoryBytes / MemSlots::kChunkBytes <= Kvm::kMaxMemslots, "one memslot per chunk must fit");

MemSlots::MemSlots(uint64_t memory_bytes)
    : size_(memory_bytes), mapped_((memory_bytes + kChunkBytes - 1) / kChunkBytes, false) {}

void MemSlots::keep_unmapped(uint64_t gpa) {
  if (std::find(keep_unmapped_.begin(), keep_unmapped_.end(), gpa) == keep_unmapped_.end())
    keep_unmapped_.push_back(gpa);
}

uint64_t MemSlots::chunk_end(size_t i) const { return std::min<uint64_t>((i + 1) * kChunkBytes, size_); }

bool MemSlots::is_mapped(uint64_t gpa) const { return gpa < size_ && mapped_[gpa / kChunkBytes]; }

bool MemSlots::wants_fault(uint64_t gpa) const {
  if (gpa < kUserBase || gpa >= size_ || is_mapped(gpa)) return false;
  uint64_t page = gpa & ~(kHugePage - 1);
  return std::find(keep_unmapped_.begin(), keep_unmapped_.end(), page) == keep_unmapped_.end();
}

// Registers chunks [first, last] as one memslot and makes their 2 MiB pages present (but the
// kept-unmapped ones). Not present -> present needs no TLB flush, and KVM's shadow MMU reads the
// guest's page-directory entries again at the next fault.
Status MemSlots::register_run(size_t first, size_t last, GuestMemory& mem, const RegisterFn& reg) {
  uint64_t start = first * kChunkBytes, stop = chunk_end(last);
  SP_TRY(reg(next_slot_, start, stop - start));
  ++next_slot_;
  for (size_t i = first; i <= last; ++i) mapped_[i] = true;
  for (uint64_t page = std::max(start, kUserBase); page < stop; page += kHugePage) {
    if (std::find(keep_unmapped_.begin(), keep_unmapped_.end(), page) == keep_unmapped_.end())
      map_huge_page(mem, page);
  }
  return {};
}

Status MemSlots::map_chunk(uint64_t gpa, GuestMemory& mem, const RegisterFn& reg) {
  if (gpa >= size_) return Error{EFAULT, "memslot outside guest memory"};
  size_t i = gpa / kChunkBytes;
  return mapped_[i] ? Status{} : register_run(i, i, mem, reg);
}

Status MemSlots::map_chunks(uint64_t gpa, uint64_t end, GuestMemory& mem, const RegisterFn& reg) {
  if (gpa >= end || end > size_) return Error{EFAULT, "memslot outside guest memory"};
  size_t first = gpa / kChunkBytes, last = (end - 1) / kChunkBytes;
  bool none = true;
  for (size_t i = first; i <= last; ++i) none = none && !mapped_[i];
  if (none) return register_run(first, last, mem, reg);
  for (size_t i = first; i <= last; ++i) SP_TRY(map_chunk(i * kChunkBytes, mem, reg));
  return {};
}

Status MemSlots::register_all(const RegisterFn& reg) {
  next_slot_ = 0;
  for (size_t i = 0; i < mapped_.size();) {
    if (!mapped_[i]) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < mapped_.size() && mapped_[j]) ++j;
    uint64_t start = i * kChunkBytes;
    SP_TRY(reg(next_slot_, start, chunk_end(j - 1) - start));
    ++next_slot_;
    i = j;
  }
  return {};
}

uint64_t MemSlots::mapped_bytes() const {
  uint64_t n = 0;
  for (size_t i = 0; i < mapped_.size(); ++i) {
    if (mapped_[i]) n += chunk_end(i) - i * kChunkBytes;
  }
  return n;
}

}  // namespace sp::vmm
