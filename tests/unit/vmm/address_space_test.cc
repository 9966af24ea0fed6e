// AddressSpace: interval bookkeeping of mapped guest ranges.
#include "vmm/address_space.h"

#include <doctest/doctest.h>

using sp::vmm::AddressSpace;

TEST_CASE("add merges adjacent and overlapping ranges") {
  AddressSpace as;
  as.add(0x1000, 0x1000);
  as.add(0x2000, 0x1000);
  as.add(0x2800, 0x2000);
  CHECK(as.range_count() == 1);
  CHECK(as.is_mapped(0x1000, 0x3800));
  CHECK_FALSE(as.is_mapped(0x1000, 0x3801));
  CHECK(as.mapped_bytes() == 0x3800);
}

TEST_CASE("remove splits a range and frees the middle") {
  AddressSpace as;
  as.add(0x10000, 0x10000);
  as.remove(0x14000, 0x2000);
  CHECK(as.range_count() == 2);
  CHECK(as.is_free(0x14000, 0x2000));
  CHECK_FALSE(as.is_free(0x13000, 0x2000));
  CHECK(as.is_mapped(0x10000, 0x4000));
  CHECK(as.is_mapped(0x16000, 0xa000));
  as.remove(0, 0x100000);
  CHECK(as.range_count() == 0);
  CHECK(as.mapped_bytes() == 0);
}

TEST_CASE("find_free places top-down inside the window and skips mapped ranges") {
  AddressSpace as;
  as.set_window(0x100000, 0x200000);
  CHECK(as.find_free(0x1000) == 0x1ff000);
  as.add(0x1f0000, 0x10000);
  CHECK(as.find_free(0x1000) == 0x1ef000);
  CHECK(as.find_free(0xf0000) == 0x100000);
  CHECK(as.find_free(0xf1000) == 0);
  CHECK(as.find_free(0) == 0);
  CHECK(as.find_free(~0ull) == 0);  // hostile length
  as.add(0x150000, 0x1000);
  CHECK(as.find_free(0x60000) == 0x190000);  // top of the gap 0x151000..0x1f0000
  CHECK(as.find_free(0x9f000) == 0x151000);
  CHECK(as.find_free(0xa0000) == 0);  // the gap below 0x150000 is 0x50000
}

TEST_CASE("ranges outside the window do not confuse find_free") {
  AddressSpace as;
  as.set_window(0x100000, 0x200000);
  as.add(0x300000, 0x1000);  // above (the stack)
  as.add(0x50000, 0x1000);   // below (the image)
  CHECK(as.find_free(0x1000) == 0x1ff000);
  as.add(0x1ff000, 0x2000);  // straddles the window top
  CHECK(as.find_free(0x1000) == 0x1fe000);
}
