// MemSlots: chunks registered on first touch, page-directory entries made present with them, the
// stack guard kept unmapped, and a clone registering its template's chunks as runs.
#include "vmm/memslots.h"

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "vmm/layout.h"
#include "vmm/x86.h"

using namespace sp::vmm;

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kChunk = MemSlots::kChunkBytes;

struct Call {
  uint32_t slot;
  uint64_t gpa, bytes;
};

uint64_t pde(const GuestMemory& mem, uint64_t gpa) {
  uint64_t v;
  // SAFETY: the page directory of gpa's GiB lies in the system area of this test guest.
  std::memcpy(&v, mem.system_ptr(kPdBase + (gpa >> 30) * kPageSize + ((gpa >> 21) & 511) * 8), 8);
  return v;
}

}  // namespace

TEST_CASE("a chunk is registered once, on demand, and its user pages become present") {
  auto m = GuestMemory::create(64 * kMiB);
  REQUIRE(m.ok());
  GuestMemory& mem = m.value();
  REQUIRE(build_system_area(mem, TrapBackend::kTripleFault).ok());
  const uint64_t system_pde = pde(mem, 0);
  CHECK((system_pde & 1) == 1);
  CHECK((system_pde & 4) == 0);  // supervisor-only
  for (uint64_t a = kUserBase; a < mem.size(); a += kHugePage) CHECK(pde(mem, a) == 0);

  std::vector<Call> calls;
  auto reg = [&](uint32_t slot, uint64_t gpa, uint64_t bytes) {
    calls.push_back({slot, gpa, bytes});
    return sp::Status{};
  };
  MemSlots s(mem.size());
  CHECK_FALSE(s.wants_fault(0x1000));          // the system area is not the guest's to map
  CHECK_FALSE(s.wants_fault(mem.size()));      // outside guest memory
  CHECK_FALSE(s.wants_fault(~0ull));
  CHECK(s.wants_fault(kUserBase));
  REQUIRE(s.map_chunk(0, mem, reg).ok());
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].slot == 0);
  CHECK(calls[0].gpa == 0);
  CHECK(calls[0].bytes == kChunk);
  CHECK(pde(mem, 0) == system_pde);  // untouched
  CHECK(pde(mem, kUserBase) == (kUserBase | 0x87));
  CHECK(pde(mem, kChunk - kHugePage) == ((kChunk - kHugePage) | 0x87));
  CHECK(pde(mem, kChunk) == 0);
  CHECK_FALSE(s.wants_fault(kUserBase + 123));
  REQUIRE(s.map_chunk(kUserBase + 5, mem, reg).ok());  // already mapped: no second memslot
  CHECK(calls.size() == 1);

  // The stack guard stays not present when its chunk is mapped, and a fault there is not ours.
  const uint64_t guard = 40 * kMiB;
  unmap_huge_page(mem, guard);
  s.keep_unmapped(guard);
  CHECK_FALSE(s.wants_fault(guard + 100));
  CHECK(s.wants_fault(guard + kHugePage));
  REQUIRE(s.map_chunk(guard + kHugePage, mem, reg).ok());
  REQUIRE(calls.size() == 2);
  CHECK(calls[1].slot == 1);
  CHECK(calls[1].gpa == 2 * kChunk);
  CHECK(pde(mem, guard) == 0);
  CHECK(pde(mem, guard - kHugePage) == ((guard - kHugePage) | 0x87));
  CHECK(pde(mem, guard + kHugePage) == ((guard + kHugePage) | 0x87));
  CHECK_FALSE(s.wants_fault(guard + 100));
  CHECK(s.slot_count() == 2);
  CHECK(s.mapped_bytes() == 2 * kChunk);
  CHECK(s.map_chunk(mem.size(), mem, reg).error().code == EFAULT);
}

TEST_CASE("a refused memslot leaves the chunk unmapped and not present") {
  auto m = GuestMemory::create(64 * kMiB);
  REQUIRE(m.ok());
  GuestMemory& mem = m.value();
  MemSlots s(mem.size());
  auto refuse = [](uint32_t, uint64_t, uint64_t) { return sp::Status{sp::Error{ENOMEM, "KVM_SET_USER_MEMORY_REGION"}}; };
  CHECK(s.map_chunk(20 * kMiB, mem, refuse).error().code == ENOMEM);
  CHECK(s.wants_fault(20 * kMiB));
  CHECK(pde(mem, 20 * kMiB) == 0);
  CHECK(s.slot_count() == 0);
  CHECK(s.mapped_bytes() == 0);
}

TEST_CASE("the last chunk is cut at the end of memory and a clone registers runs of chunks") {
  auto m = GuestMemory::create(70 * kMiB);
  REQUIRE(m.ok());
  GuestMemory& mem = m.value();
  std::vector<Call> calls;
  auto reg = [&](uint32_t slot, uint64_t gpa, uint64_t bytes) {
    calls.push_back({slot, gpa, bytes});
    return sp::Status{};
  };
  MemSlots s(mem.size());
  REQUIRE(s.map_chunk(68 * kMiB, mem, reg).ok());
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].gpa == 4 * kChunk);
  CHECK(calls[0].bytes == 6 * kMiB);
  CHECK(pde(mem, 68 * kMiB) == ((68 * kMiB) | 0x87));
  REQUIRE(s.map_chunk(0, mem, reg).ok());
  REQUIRE(s.map_chunk(3 * kChunk + 1, mem, reg).ok());
  CHECK(s.slot_count() == 3);

  // A clone's copy: chunks 0, 3 and 4 as two memslots, numbered from 0.
  MemSlots clone = s;
  calls.clear();
  REQUIRE(clone.register_all(reg).ok());
  REQUIRE(calls.size() == 2);
  CHECK(calls[0].slot == 0);
  CHECK(calls[0].gpa == 0);
  CHECK(calls[0].bytes == kChunk);
  CHECK(calls[1].slot == 1);
  CHECK(calls[1].gpa == 3 * kChunk);
  CHECK(calls[1].bytes == kChunk + 6 * kMiB);
  CHECK(clone.slot_count() == 2);
  CHECK(clone.mapped_bytes() == 2 * kChunk + 6 * kMiB);
  // Growth after the clone takes the next free slot number.
  REQUIRE(clone.map_chunk(kChunk, mem, reg).ok());
  CHECK(calls.back().slot == 2);
  CHECK(calls.back().gpa == kChunk);
}

TEST_CASE("map_chunks: unmapped adjacent chunks become one memslot; a partly mapped range goes chunk by chunk") {
  auto m = GuestMemory::create(64 * kMiB);
  REQUIRE(m.ok());
  GuestMemory& mem = m.value();
  REQUIRE(build_system_area(mem, TrapBackend::kTripleFault).ok());
  std::vector<Call> calls;
  auto reg = [&](uint32_t slot, uint64_t gpa, uint64_t bytes) {
    calls.push_back({slot, gpa, bytes});
    return sp::Status{};
  };
  MemSlots s(mem.size());
  const uint64_t guard = mem.size() - 5 * kHugePage;
  s.keep_unmapped(guard);
  REQUIRE(s.map_chunks(mem.size() - 2 * kChunk, mem.size(), mem, reg).ok());
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].slot == 0);
  CHECK(calls[0].gpa == mem.size() - 2 * kChunk);
  CHECK(calls[0].bytes == 2 * kChunk);
  CHECK(s.is_mapped(mem.size() - 2 * kChunk));
  CHECK(s.is_mapped(mem.size() - 1));
  CHECK(pde(mem, guard) == 0);  // kept unmapped
  CHECK(pde(mem, guard + kHugePage) == ((guard + kHugePage) | 0x87));
  CHECK_FALSE(s.wants_fault(mem.size() - 1));
  // One chunk of the range already mapped: the other is registered on its own.
  REQUIRE(s.map_chunks(mem.size() - 3 * kChunk, mem.size() - kChunk, mem, reg).ok());
  REQUIRE(calls.size() == 2);
  CHECK(calls[1].slot == 1);
  CHECK(calls[1].gpa == mem.size() - 3 * kChunk);
  CHECK(calls[1].bytes == kChunk);
  CHECK_FALSE(s.map_chunks(0, mem.size() + 1, mem, reg).ok());
  CHECK_FALSE(s.map_chunks(kChunk, kChunk, mem, reg).ok());
}
