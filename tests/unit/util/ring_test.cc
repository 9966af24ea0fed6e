// Tests for SpscRing: order, full/empty edges, move-only payloads, and a two-thread stress run.
#include "util/ring.h"

#include <doctest/doctest.h>

#include <memory>
#include <thread>

TEST_CASE("ring: fifo order, full and empty") {
  sp::SpscRing<int> r(3);
  CHECK(r.capacity() == 4);
  CHECK_FALSE(r.try_pop().has_value());
  for (int i = 0; i < 4; ++i) CHECK(r.try_push(int(i)));
  CHECK_FALSE(r.try_push(99));
  CHECK(r.size_approx() == 4);
  for (int i = 0; i < 4; ++i) CHECK(*r.try_pop() == i);
  CHECK_FALSE(r.try_pop().has_value());
}

TEST_CASE("ring: wraps around many times") {
  sp::SpscRing<int> r(2);
  for (int i = 0; i < 1000; ++i) {
    CHECK(r.try_push(int(i)));
    CHECK(*r.try_pop() == i);
  }
}

TEST_CASE("ring: move-only payloads are destroyed exactly once") {
  auto counter = std::make_shared<int>(0);
  {
    sp::SpscRing<std::shared_ptr<int>> r(8);
    for (int i = 0; i < 5; ++i) CHECK(r.try_push(std::shared_ptr<int>(counter)));
    CHECK(counter.use_count() == 6);
    auto one = r.try_pop();
    CHECK(counter.use_count() == 6);
    one.reset();
    CHECK(counter.use_count() == 5);
  }  // the ring's destructor drops the rest
  CHECK(counter.use_count() == 1);
  sp::SpscRing<std::unique_ptr<int>> u(2);
  CHECK(u.try_push(std::make_unique<int>(7)));
  CHECK(**u.try_pop() == 7);
}

TEST_CASE("ring: one producer and one consumer thread see every item in order") {
  constexpr long kItems = 200000;
  sp::SpscRing<long> r(64);
  std::thread producer([&] {
    for (long i = 0; i < kItems;) {
      if (r.try_push(long(i))) ++i;
      else std::this_thread::yield();
    }
  });
  long expect = 0;
  bool in_order = true;
  while (expect < kItems) {
    if (auto v = r.try_pop()) {
      if (*v != expect) in_order = false;
      ++expect;
    } else {
      std::this_thread::yield();
    }
  }
  producer.join();
  CHECK(in_order);
  CHECK_FALSE(r.try_pop().has_value());
}
