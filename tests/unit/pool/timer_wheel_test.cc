// Unit tests of the timer wheel with explicit time: no sleeping, no clock.
#include "pool/timer_wheel.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

using sp::TimerEntry;
using sp::TimerWheel;

namespace {

// An owner embedding its entry, as sessions do.
struct Owner {
  static void on_fire(TimerEntry* e, uint64_t now_ms);
  TimerEntry timer{&Owner::on_fire};
  int id = 0;
  std::vector<std::pair<int, uint64_t>>* log = nullptr;  // (id, deadline) in firing order
  uint64_t fired_at = 0;
  // Optional behaviour inside the callback.
  TimerWheel* wheel = nullptr;
  uint64_t rearm_delay_ms = 0;
  int rearm_times = 0;
  Owner* cancel_other = nullptr;
};

void Owner::on_fire(TimerEntry* e, uint64_t now_ms) {
  Owner* o = SP_TIMER_OWNER(e, Owner, timer);
  o->fired_at = now_ms;
  if (o->log) o->log->push_back({o->id, e->deadline_ms()});
  if (o->cancel_other) o->wheel->cancel(&o->cancel_other->timer);
  if (o->rearm_times > 0) {
    --o->rearm_times;
    o->wheel->arm(&o->timer, e->deadline_ms() + o->rearm_delay_ms);
  }
}

}  // namespace

TEST_CASE("fires at the deadline, not before") {
  TimerWheel w(1000);
  Owner o;
  w.arm(&o.timer, 1005);
  CHECK(w.size() == 1);
  CHECK(w.next_deadline() == 1005);
  CHECK(w.advance(1004) == 0);
  CHECK(o.timer.armed());
  CHECK(w.advance(1005) == 1);
  CHECK_FALSE(o.timer.armed());
  CHECK(o.fired_at == 1005);
  CHECK(w.size() == 0);
  CHECK_FALSE(w.next_deadline().has_value());
}

TEST_CASE("cancel and re-arm are honoured") {
  TimerWheel w(0);
  Owner a, b;
  w.arm(&a.timer, 10);
  w.arm(&b.timer, 20);
  w.cancel(&a.timer);
  w.cancel(&a.timer);  // idempotent
  w.arm(&b.timer, 5000);  // re-arm moves it
  CHECK(w.size() == 1);
  CHECK(w.advance(4999) == 0);
  CHECK(w.advance(5000) == 1);
  CHECK(b.fired_at == 5000);
  CHECK(a.fired_at == 0);
}

TEST_CASE("a deadline in the past fires at the next advance") {
  TimerWheel w(100);
  Owner o;
  w.arm(&o.timer, 50);
  CHECK(w.next_deadline() == 100);
  CHECK(w.advance(100) == 1);
  w.arm_in(&o.timer, 0);
  CHECK(w.advance(90) == 1);  // time going backwards is ignored, due entries still fire
  CHECK(w.now_ms() == 100);
}

TEST_CASE("long delays cross levels and fire exactly") {
  for (uint64_t delay : {63ull, 64ull, 65ull, 4095ull, 4096ull, 4097ull, 262'143ull, 262'144ull,
                         3'600'000ull, 86'400'000ull, 40ull * 86'400'000ull}) {
    CAPTURE(delay);
    TimerWheel w(123'456);
    Owner o;
    w.arm_in(&o.timer, delay);
    uint64_t deadline = 123'456 + delay;
    // Walk time in uneven steps, never passing the deadline until the end.
    uint64_t t = 123'456;
    std::mt19937_64 rng(delay);
    while (t + 1 < deadline) {
      uint64_t step = 1 + rng() % std::max<uint64_t>(1, delay / 7);
      t = std::min(deadline - 1, t + step);
      REQUIRE(w.advance(t) == 0);
      auto next = w.next_deadline();
      REQUIRE(next.has_value());
      CHECK(*next <= deadline);
      CHECK(*next > t);
    }
    CHECK(w.advance(deadline) == 1);
    CHECK(o.fired_at == deadline);
  }
}

TEST_CASE("a time jump fires everything due, in deadline order") {
  std::vector<std::pair<int, uint64_t>> log;
  std::vector<Owner> owners(1000);
  TimerWheel w(0);
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1000; ++i) {
    owners[i].id = i;
    owners[i].log = &log;
    w.arm(&owners[i].timer, 1 + rng() % 10'000'000);
  }
  CHECK(w.advance(20'000'000) == 1000);
  REQUIRE(log.size() == 1000);
  CHECK(std::is_sorted(log.begin(), log.end(),
                       [](auto& x, auto& y) { return x.second < y.second; }));
}

TEST_CASE("many entries with random arm/cancel match a reference model") {
  std::mt19937_64 rng(42);
  constexpr int kN = 20'000;
  std::vector<Owner> owners(kN);  // outlive the wheel (or cancel first): the contract
  TimerWheel w(5);
  std::vector<std::pair<int, uint64_t>> log;
  std::map<int, uint64_t> model;  // id -> deadline
  for (int i = 0; i < kN; ++i) {
    owners[i].id = i;
    owners[i].log = &log;
  }
  uint64_t now = 5;
  for (int round = 0; round < 200; ++round) {
    for (int k = 0; k < 300; ++k) {
      int i = static_cast<int>(rng() % kN);
      if (rng() % 4 == 0) {
        w.cancel(&owners[i].timer);
        model.erase(i);
      } else {
        uint64_t span = (rng() % 3 == 0) ? 100 : (rng() % 2 ? 100'000 : 50'000'000);
        uint64_t d = now + 1 + rng() % span;
        w.arm(&owners[i].timer, d);
        model[i] = d;
      }
    }
    CHECK(w.size() == model.size());
    now += rng() % 2 ? rng() % 50 : rng() % 3'000'000;
    log.clear();
    w.advance(now);
    std::vector<std::pair<int, uint64_t>> want;
    for (auto it = model.begin(); it != model.end();) {
      if (it->second <= now) {
        want.push_back(*it);
        it = model.erase(it);
      } else {
        ++it;
      }
    }
    auto by_id = [](auto& x, auto& y) { return x.first < y.first; };
    std::sort(log.begin(), log.end(), by_id);
    CHECK(log == want);
    if (auto next = w.next_deadline(); next && !model.empty()) {
      uint64_t earliest = UINT64_MAX;
      for (auto& [id, d] : model) earliest = std::min(earliest, d);
      CHECK(*next <= earliest);
      CHECK(*next > now);
    }
  }
}

TEST_CASE("re-arm during the callback (periodic timer)") {
  TimerWheel w(0);
  Owner o;
  o.wheel = &w;
  o.rearm_delay_ms = 100;
  o.rearm_times = 9;
  std::vector<std::pair<int, uint64_t>> log;
  o.log = &log;
  w.arm(&o.timer, 100);
  CHECK(w.advance(1000) == 10);  // 100, 200, ... 1000 all due within this jump
  CHECK(log.size() == 10);
  CHECK(log.back().second == 1000);
  CHECK_FALSE(o.timer.armed());
}

TEST_CASE("re-arm to now inside the callback waits for the next advance") {
  TimerWheel w(0);
  Owner o;
  o.wheel = &w;
  o.rearm_delay_ms = 0;
  o.rearm_times = 1000;
  w.arm(&o.timer, 10);
  CHECK(w.advance(10) == 1);
  CHECK(o.timer.armed());
  CHECK(w.next_deadline() == 10);
  CHECK(w.advance(10) == 1);
  w.cancel(&o.timer);  // the owner dies first here
}

TEST_CASE("cancel of another due entry during a callback") {
  TimerWheel w(0);
  Owner a, b, c;
  std::vector<std::pair<int, uint64_t>> log;
  a.id = 1; b.id = 2; c.id = 3;
  a.log = b.log = c.log = &log;
  a.wheel = b.wheel = &w;
  a.cancel_other = &b;  // both due in the same slot
  b.cancel_other = &a;
  w.arm(&a.timer, 50);
  w.arm(&b.timer, 50);
  w.arm(&c.timer, 70);
  CHECK(w.advance(100) == 2);
  CHECK(log.size() == 2);
  CHECK(log[1].first == 3);
  CHECK(w.size() == 0);
}

TEST_CASE("self-cancel inside the callback is harmless") {
  TimerWheel w(0);
  Owner o;
  o.wheel = &w;
  o.cancel_other = &o;
  w.arm(&o.timer, 5);
  CHECK(w.advance(5) == 1);
  CHECK(w.size() == 0);
}

TEST_CASE("the wheel's destructor disarms remaining entries") {
  Owner o;
  {
    TimerWheel w(0);
    w.arm(&o.timer, 1'000'000);
  }
  CHECK_FALSE(o.timer.armed());
}

TEST_CASE("extreme deadlines") {
  TimerWheel w(UINT64_MAX - 1000);
  Owner o;
  w.arm(&o.timer, UINT64_MAX);
  CHECK(w.advance(UINT64_MAX - 1) == 0);
  CHECK(w.advance(UINT64_MAX) == 1);
  TimerWheel w2(0);
  w2.arm(&o.timer, UINT64_MAX);
  CHECK(w2.next_deadline().has_value());
  CHECK(w2.advance(UINT64_MAX - 1) == 0);
  CHECK(w2.advance(UINT64_MAX) == 1);
}
