// Google Benchmark: cost of timer wheel arm, re-arm, cancel and advance.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "pool/timer_wheel.h"

namespace {

struct Item {
  static void on_fire(sp::TimerEntry*, uint64_t) {}
  sp::TimerEntry timer{&Item::on_fire};
};

// Arm + cancel of one entry among `n` armed ones (a session's cooldown reset).
void BM_ArmCancel(benchmark::State& state) {
  std::vector<Item> items(static_cast<size_t>(state.range(0)));
  sp::TimerWheel w(1'000'000);
  std::mt19937_64 rng(1);
  for (Item& it : items) w.arm_in(&it.timer, 1 + rng() % 600'000);
  Item probe;
  uint64_t i = 0;
  for (auto _ : state) {
    w.arm_in(&probe.timer, 1000 + (i++ & 1023) * 300);
    w.cancel(&probe.timer);
  }
  for (Item& it : items) w.cancel(&it.timer);
}
BENCHMARK(BM_ArmCancel)->Arg(0)->Arg(10'000)->Arg(100'000);

// Re-arm of an already armed entry to a later deadline (every request resets a cooldown).
void BM_Rearm(benchmark::State& state) {
  std::vector<Item> items(10'000);
  sp::TimerWheel w(0);
  std::mt19937_64 rng(2);
  for (Item& it : items) w.arm_in(&it.timer, 1 + rng() % 300'000);
  size_t k = 0;
  for (auto _ : state) {
    Item& it = items[k++ % items.size()];
    w.arm_in(&it.timer, 300'000 + (k & 4095));
  }
  for (Item& it : items) w.cancel(&it.timer);
}
BENCHMARK(BM_Rearm);

// advance() in 1 ms steps with `n` entries spread over 10 minutes: per-step cost,
// including the amortized cascades and the firings.
void BM_AdvanceTick(benchmark::State& state) {
  std::vector<Item> items(static_cast<size_t>(state.range(0)));
  sp::TimerWheel w(0);
  std::mt19937_64 rng(3);
  uint64_t now = 0;
  for (Item& it : items) w.arm_in(&it.timer, 1 + rng() % 600'000);
  size_t k = 0;
  for (auto _ : state) {
    w.advance(++now);
    Item& it = items[k++ % items.size()];
    if (!it.timer.armed()) w.arm_in(&it.timer, 1 + rng() % 600'000);
  }
  for (Item& it : items) w.cancel(&it.timer);
}
BENCHMARK(BM_AdvanceTick)->Arg(10'000)->Arg(100'000);

}  // namespace

BENCHMARK_MAIN();
