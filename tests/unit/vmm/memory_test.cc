// GuestMemory: the checks behind every guest pointer.
#include "vmm/memory.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>

using namespace sp::vmm;

TEST_CASE("user_range_ok rejects the system area, the end of memory and overflow") {
  auto m = GuestMemory::create(64ull << 20);
  REQUIRE(m.ok());
  GuestMemory& mem = m.value();
  const uint64_t size = mem.size();
  CHECK(mem.user_range_ok(kUserBase, 1));
  CHECK(mem.user_range_ok(size - 1, 1));
  CHECK(mem.user_range_ok(size, 0));
  CHECK_FALSE(mem.user_range_ok(0, 1));
  CHECK_FALSE(mem.user_range_ok(kPml4, 8));
  CHECK_FALSE(mem.user_range_ok(kUserBase - 1, 2));
  CHECK_FALSE(mem.user_range_ok(size - 1, 2));
  CHECK_FALSE(mem.user_range_ok(size, 1));
  CHECK_FALSE(mem.user_range_ok(kUserBase, ~0ull));             // wraps
  CHECK_FALSE(mem.user_range_ok(~0ull - 4, 8));                  // wraps
  CHECK_FALSE(mem.user_range_ok(0xffff800000000000ull, 4096));   // kernel half
  CHECK(mem.user_ptr(0x1000, 1) == nullptr);
  CHECK(mem.user_ptr(kUserBase, 16) == mem.host_base() + kUserBase);
  uint64_t v = 0x1122334455667788ull, back = 0;
  CHECK(mem.write(kUserBase + 8, v));
  CHECK(mem.read(kUserBase + 8, &back));
  CHECK(back == v);
  CHECK_FALSE(mem.write(size - 4, v));
}

TEST_CASE("read_cstring is bounded by guest memory and by max_len") {
  auto m = GuestMemory::create(64ull << 20);
  REQUIRE(m.ok());
  GuestMemory& mem = m.value();
  std::string s;
  CHECK(mem.copy_out(kUserBase, "hello", 6));
  CHECK(mem.read_cstring(kUserBase, 100, &s).ok());
  CHECK(s == "hello");
  CHECK(mem.read_cstring(kUserBase, 3, &s).error().code == ENAMETOOLONG);
  CHECK(mem.read_cstring(0x1000, 100, &s).error().code == EFAULT);
  // No NUL before the end of guest memory: EFAULT, never a read past it.
  std::string fill(4096, 'x');
  CHECK(mem.copy_out(mem.size() - 4096, fill.data(), 4096));
  CHECK(mem.read_cstring(mem.size() - 4096, 1 << 20, &s).error().code == EFAULT);
}

TEST_CASE("zero clears partial pages and punched pages read back as zero") {
  auto m = GuestMemory::create(64ull << 20);
  REQUIRE(m.ok());
  GuestMemory& mem = m.value();
  std::string fill(5 * kPageSize, 'y');
  CHECK(mem.copy_out(kUserBase, fill.data(), fill.size()));
  CHECK(mem.zero(kUserBase + 100, 3 * kPageSize).ok());
  uint8_t b = 0;
  CHECK(mem.read(kUserBase + 99, &b));
  CHECK(b == 'y');
  for (uint64_t off : {uint64_t{100}, kPageSize, 2 * kPageSize + 7, 3 * kPageSize + 99}) {
    CHECK(mem.read(kUserBase + off, &b));
    CHECK(b == 0);
  }
  CHECK(mem.read(kUserBase + 3 * kPageSize + 100, &b));
  CHECK(b == 'y');
  CHECK_FALSE(mem.zero(0, 4096).ok());
  CHECK_FALSE(mem.zero(mem.size() - 4096, 8192).ok());
}

TEST_CASE("create refuses bad sizes") {
  CHECK_FALSE(GuestMemory::create(0).ok());
  CHECK_FALSE(GuestMemory::create((64ull << 20) + 4096).ok());
  CHECK_FALSE(GuestMemory::create(64ull << 30).ok());
}

TEST_CASE("a private view shares the template's pages and never writes them back") {
  auto t = GuestMemory::create(64ull << 20);
  REQUIRE(t.ok());
  GuestMemory& tmpl = t.value();
  CHECK(tmpl.write<uint64_t>(kUserBase, 111));
  CHECK(tmpl.write<uint64_t>(kUserBase + kPageSize, 222));
  auto c = GuestMemory::map_private(tmpl.memfd(), tmpl.size());
  REQUIRE(c.ok());
  GuestMemory& clone = c.value();
  CHECK(clone.is_private());
  uint64_t v = 0;
  CHECK(clone.read(kUserBase, &v));
  CHECK(v == 111);
  CHECK(clone.write<uint64_t>(kUserBase, 5));
  CHECK(clone.zero(kUserBase + kPageSize, kPageSize).ok());  // must not punch the template's memfd
  CHECK(clone.read(kUserBase + kPageSize, &v));
  CHECK(v == 0);
  CHECK(tmpl.read(kUserBase, &v));
  CHECK(v == 111);
  CHECK(tmpl.read(kUserBase + kPageSize, &v));
  CHECK(v == 222);
}

TEST_CASE("anonymous huge-page memory: 2 MiB aligned, no memfd, same checks, zero reads back zero") {
  auto m = GuestMemory::create(64ull << 20, GuestMemory::Backing::kAnonymousHuge);
  REQUIRE(m.ok());
  GuestMemory& mem = m.value();
  CHECK(mem.is_anonymous());
  CHECK(mem.memfd() < 0);
  CHECK(reinterpret_cast<uintptr_t>(mem.host_base()) % kHugePage == 0);
  CHECK_FALSE(mem.user_range_ok(0, 1));
  CHECK_FALSE(mem.user_range_ok(mem.size() - 1, 2));
  std::string fill(3 * kHugePage, 'z');
  CHECK(mem.copy_out(kUserBase, fill.data(), fill.size()));
  CHECK(mem.zero(kUserBase + 100, 2 * kHugePage).ok());
  uint8_t b = 0;
  CHECK(mem.read(kUserBase + 99, &b));
  CHECK(b == 'z');
  for (uint64_t off : {uint64_t{100}, kPageSize, kHugePage, 2 * kHugePage + 99}) {
    CHECK(mem.read(kUserBase + off, &b));
    CHECK(b == 0);
  }
  CHECK(mem.read(kUserBase + 2 * kHugePage + 100, &b));
  CHECK(b == 'z');
  CHECK_FALSE(mem.zero(mem.size() - 4096, 8192).ok());
}
