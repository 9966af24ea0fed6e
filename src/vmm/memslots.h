// Which parts of guest memory KVM knows about: guest-physical memory is given to KVM in 16 MiB
// chunks, each the first time the guest touches it, instead of as one memslot for the whole guest.
// Not the memory itself (memory.h) nor the guest's allocator (address_space.h).
//
// Why: KVM allocates and zeroes per-memslot metadata proportional to the slot's size (on kvm-pvm's
// shadow MMU: rmap 2 KiB and write-tracking 0.5 KiB per MiB), charged to the VMM's memcg. One slot
// for a 1984 MiB guest made every clone allocate, zero and later free ≈ 5 MiB; a clone now
// registers only the chunks its template used.
//
// How: a chunk that is not registered has its 2 MiB page-directory entries not present, so the
// guest's first access faults (#PF, CPL3) to the VMM, which registers the chunk, makes its pages
// present and resumes the faulting instruction (Vm::handle_trap). The guest sees no difference:
// every address of its memory still works, the memory limit is the guest's size as before, and a
// 2 MiB page kept unmapped on purpose (the stack guard) stays not present.
//
// Threading: used by the vCPU thread only (create, clone, the run loop).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "util/result.h"
#include "vmm/memory.h"

namespace sp::vmm {

class MemSlots {
 public:
  static constexpr uint64_t kChunkBytes = 16ull << 20;
  // Hands [gpa, gpa+bytes) of guest memory to KVM as memslot `slot` (KvmVm::set_memory).
  using RegisterFn = std::function<Status(uint32_t slot, uint64_t gpa, uint64_t bytes)>;

  MemSlots() = default;
  explicit MemSlots(uint64_t memory_bytes);

  // The 2 MiB page at `gpa` stays not present when its chunk is mapped (the stack guard).
  void keep_unmapped(uint64_t gpa);

  bool is_mapped(uint64_t gpa) const;
  // True when a guest page fault at `gpa` is a first touch of a chunk that is not mapped yet:
  // inside guest memory, not the system area (always mapped), not a kept-unmapped page.
  bool wants_fault(uint64_t gpa) const;

  // Maps the chunk holding `gpa`: one new memslot, then its 2 MiB pages made present in the page
  // tables in `mem` (user pages, except kept-unmapped ones). No-op when already mapped.
  Status map_chunk(uint64_t gpa, GuestMemory& mem, const RegisterFn& reg);

  // Maps the chunks holding [gpa, end) as one memslot (one KVM ioctl, each of which waits for an SRCU
  // grace period) when none of them is mapped yet, else chunk by chunk as map_chunk.
  Status map_chunks(uint64_t gpa, uint64_t end, GuestMemory& mem, const RegisterFn& reg);

  // For a clone whose memory (page tables included) is a copy of its template's: registers the
  // chunks this MemSlots (a copy of the template's) has mapped, one memslot per run of adjacent
  // chunks, numbering slots from 0. The page tables already have them present.
  Status register_all(const RegisterFn& reg);

  uint32_t slot_count() const { return next_slot_; }
  uint64_t mapped_bytes() const;

 private:
  uint64_t chunk_end(size_t i) const;
  Status register_run(size_t first, size_t last, GuestMemory& mem, const RegisterFn& reg);
  uint64_t size_ = 0;
  std::vector<bool> mapped_;
  std::vector<uint64_t> keep_unmapped_;
  uint32_t next_slot_ = 0;
};

}  // namespace sp::vmm
