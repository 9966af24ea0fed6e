// Google Benchmark of allocation (DESIGN.md §8): a new identifier → a bound ready sandbox, in-process,
// on a real Pool and LoopTimers. The source hands out pre-made socketpairs as "ready sandboxes".
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <uv.h>

#include <deque>
#include <string>

#include "pool/pool.h"

namespace {

using namespace sp;
using namespace sp::pool;

class FakeSource : public SandboxSource {
 public:
  Status start(std::function<void()>) override { return {}; }
  void set_wanted(size_t) override {}
  std::optional<Sandbox> pop() override {
    if (ready_.empty()) return std::nullopt;
    Sandbox s = std::move(ready_.front());
    ready_.pop_front();
    return s;
  }
  size_t ready_count() const override { return ready_.size(); }
  void release(Sandbox&&) override {}
  void stop(Offload&, std::function<void()> done) override { done(); }
  SourceStats stats() const override { return {}; }
  const char* tier() const override { return "fake"; }

  void refill(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      int sv[2];
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
      Sandbox s;
      s.id = ++next_id_;
      s.agent_fd = UniqueFd(sv[0]);
      peers_.emplace_back(sv[1]);
      ready_.push_back(std::move(s));
    }
  }
  void drop_peers() { peers_.clear(); }

 private:
  std::deque<Sandbox> ready_;
  std::deque<UniqueFd> peers_;
  uint64_t next_id_ = 0;
};

// Ends the pool and its timers and lets the loop run their close callbacks.
void stop_pool(uv_loop_t& loop, Pool& pool, LoopTimers& timers, Offload& offload) {
  bool stopped = false;
  pool.stop([&] { stopped = true; });
  while (!stopped) uv_run(&loop, UV_RUN_NOWAIT);
  timers.close();
  offload.close([] {});
  uv_run(&loop, UV_RUN_NOWAIT);
}

void BM_AllocateNewIdentifier(benchmark::State& state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    LoopTimers timers(&loop);
    Offload offload(&loop);
    PoolSettings settings;
    settings.max_concurrent_sessions = 1000000;
    auto source = std::make_unique<FakeSource>();
    FakeSource* src = source.get();
    Pool pool(&loop, &timers, &offload, settings, std::move(source));
    (void)pool.start();
    const size_t batch = 512;
    uint64_t n = 0;
    std::vector<std::string> ids;
    for (auto _ : state) {
      state.PauseTiming();
      if (src->ready_count() == 0) {
        // End the previous batch (outside the timing) and make a fresh one.
        for (Session* s : pool.sessions_by_age()) s->destroy("bench");
        uv_run(&loop, UV_RUN_NOWAIT);
        src->drop_peers();
        src->refill(batch);
      }
      std::string id = "bench-" + std::to_string(n++);
      state.ResumeTiming();
      Session* got = nullptr;
      pool.acquire(id, [&](Session* s, const AcquireError*) { got = s; });
      benchmark::DoNotOptimize(got);
    }
    stop_pool(loop, pool, timers, offload);
  }
  uv_loop_close(&loop);
}

void BM_AcquireKnownIdentifier(benchmark::State& state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    LoopTimers timers(&loop);
    Offload offload(&loop);
    auto source = std::make_unique<FakeSource>();
    source->refill(64);
    Pool pool(&loop, &timers, &offload, PoolSettings{}, std::move(source));
    (void)pool.start();
    for (int i = 0; i < 64; ++i) pool.acquire("known-" + std::to_string(i), [](Session*, const AcquireError*) {});
    int i = 0;
    std::string ids[64];
    for (int k = 0; k < 64; ++k) ids[k] = "known-" + std::to_string(k);
    for (auto _ : state) {
      Session* got = nullptr;
      pool.acquire(ids[i++ & 63], [&](Session* s, const AcquireError*) { got = s; });
      benchmark::DoNotOptimize(got);
    }
    stop_pool(loop, pool, timers, offload);
  }
  uv_loop_close(&loop);
}

BENCHMARK(BM_AllocateNewIdentifier)->Iterations(20000);
BENCHMARK(BM_AcquireKnownIdentifier);

}  // namespace

BENCHMARK_MAIN();
