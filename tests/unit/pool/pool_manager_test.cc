// PoolManager with a fake source whose prepare() and teardown block on gates: creation and
// deletion never block the loop, and the races between them (same name twice, delete while
// creating, create while the name tears down, shutdown during either) end with every source
// stopped and freed and uv_loop_close() == 0.
#include <doctest/doctest.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "pool/pool_manager.h"

namespace {

using namespace sp;
using namespace sp::pool;

struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock<std::mutex> g(mu);
    cv.wait(g, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard<std::mutex> g(mu);
      open = true;
    }
    cv.notify_all();
  }
};

struct Counters {
  std::atomic<int> made{0}, prepared{0}, started{0}, stopped{0}, torn_down{0}, destroyed{0};
  std::atomic<int> preparing_now{0}, max_preparing_same_name{0};
};

class FakeSource : public SandboxSource {
 public:
  FakeSource(Counters* c, Gate* prepare_gate, Gate* teardown_gate, bool fail)
      : c_(c), prepare_gate_(prepare_gate), teardown_gate_(teardown_gate), fail_(fail) {
    ++c_->made;
  }
  ~FakeSource() override { ++c_->destroyed; }
  Status prepare() override {
    if (prepare_gate_) prepare_gate_->wait();
    ++c_->prepared;
    if (fail_) return Error{EIO, "fake prepare failed"};
    return {};
  }
  Status start(std::function<void()>) override {
    ++c_->started;
    return {};
  }
  void set_wanted(size_t) override {}
  std::optional<Sandbox> pop() override { return std::nullopt; }
  size_t ready_count() const override { return 0; }
  void release(Sandbox&&) override {}
  void stop(Offload& offload, std::function<void()> on_stopped) override {
    ++c_->stopped;
    Gate* g = teardown_gate_;
    Counters* c = c_;
    offload.run([g, c] {
      if (g) g->wait();
      ++c->torn_down;
    }, std::move(on_stopped));
  }
  SourceStats stats() const override { return {}; }
  const char* tier() const override { return "fake"; }

 private:
  Counters* c_;
  Gate* prepare_gate_;
  Gate* teardown_gate_;
  bool fail_;
};

struct Fixture {
  uv_loop_t loop;
  Counters counters;
  Gate prepare_gate, teardown_gate;
  bool gate_prepare = true, gate_teardown = false, fail = false;
  std::unique_ptr<PoolManager> pools;

  Fixture() {
    uv_loop_init(&loop);
    pools = std::make_unique<PoolManager>(&loop, [this](uv_loop_t*, const PoolSettings& s) -> Result<std::unique_ptr<SandboxSource>> {
      if (s.name == "no-source") return Error{ENOENT, "no such runtime"};
      return std::unique_ptr<SandboxSource>(new FakeSource(&counters, gate_prepare ? &prepare_gate : nullptr,
                                                           gate_teardown ? &teardown_gate : nullptr, fail));
    });
  }
  // Runs the loop until `pred` holds (the offload's wake-up keeps it alive while a job runs).
  template <typename Pred>
  bool run_until(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (uv_run(&loop, UV_RUN_ONCE) == 0 && !pred()) uv_run(&loop, UV_RUN_NOWAIT);
    }
    return true;
  }
  void shut_down() {
    prepare_gate.release();
    teardown_gate.release();
    bool stopped = false;
    pools->stop([&] { stopped = true; });
    CHECK(run_until([&] { return stopped; }));
    uv_run(&loop, UV_RUN_DEFAULT);
    pools.reset();
    CHECK(uv_loop_close(&loop) == 0);
    CHECK(counters.made == counters.destroyed);
    CHECK(counters.made == counters.stopped);
  }
};

PoolSettings named(const std::string& name) {
  PoolSettings s;
  s.name = name;
  return s;
}

struct Answer {
  bool called = false;
  Status status;
  std::string message;
  PoolManager::CreateDone fn() {
    return [this](Status st, const std::string& m) {
      called = true;
      status = std::move(st);
      message = m;
    };
  }
};

}  // namespace

TEST_CASE("create prepares off the loop thread and answers once the pool is live") {
  Fixture f;
  Answer a;
  std::string msg;
  REQUIRE(f.pools->create(named("p1"), &msg, a.fn()).ok());
  // prepare() is blocked on its gate, yet the loop runs and create() has returned.
  for (int i = 0; i < 5; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK_FALSE(a.called);
  CHECK(f.pools->find("p1") == nullptr);
  CHECK(f.pools->creating() == 1);
  f.prepare_gate.release();
  REQUIRE(f.run_until([&] { return a.called; }));
  CHECK(a.status.ok());
  CHECK(f.pools->find("p1") != nullptr);
  CHECK(f.counters.started == 1);
  CHECK(f.pools->creating() == 0);
  f.shut_down();
}

TEST_CASE("the same name twice at once: the second is refused, the first completes") {
  Fixture f;
  Answer a, b;
  std::string msg;
  REQUIRE(f.pools->create(named("dup"), &msg, a.fn()).ok());
  Status second = f.pools->create(named("dup"), &msg, b.fn());
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code == EEXIST);
  CHECK(msg.find("being created") != std::string::npos);
  f.prepare_gate.release();
  REQUIRE(f.run_until([&] { return a.called; }));
  CHECK(a.status.ok());
  CHECK_FALSE(b.called);
  Status third = f.pools->create(named("dup"), &msg, b.fn());
  CHECK(third.error().code == EEXIST);
  CHECK(f.counters.made == 1);  // the refused ones made no source
  f.shut_down();
}

TEST_CASE("deleting a pool while it is created cancels it; what was prepared is torn down") {
  Fixture f;
  Answer a;
  std::string msg;
  REQUIRE(f.pools->create(named("gone"), &msg, a.fn()).ok());
  CHECK(f.pools->remove("gone"));
  REQUIRE(a.called);  // answered at once
  CHECK(a.status.error().code == kPoolDeleted);
  CHECK(f.pools->find("gone") == nullptr);
  CHECK_FALSE(f.pools->remove("gone"));
  CHECK(f.pools->tearing_down() == 1);
  f.prepare_gate.release();
  REQUIRE(f.run_until([&] { return f.pools->tearing_down() == 0; }));
  CHECK(f.counters.started == 0);
  CHECK(f.counters.stopped == 1);
  CHECK(f.counters.torn_down == 1);
  CHECK(f.counters.destroyed == 1);
  f.shut_down();
}

TEST_CASE("delete returns before the teardown; a new pool of that name waits for it") {
  Fixture f;
  f.gate_prepare = false;
  f.gate_teardown = true;
  Answer a, b;
  std::string msg;
  REQUIRE(f.pools->create(named("again"), &msg, a.fn()).ok());
  REQUIRE(f.run_until([&] { return a.called; }));
  REQUIRE(a.status.ok());
  CHECK(f.pools->remove("again"));
  CHECK(f.pools->find("again") == nullptr);
  REQUIRE(f.run_until([&] { return f.counters.stopped == 1; }));  // the teardown is blocked on its gate
  CHECK(f.pools->tearing_down() == 1);
  REQUIRE(f.pools->create(named("again"), &msg, b.fn()).ok());
  for (int i = 0; i < 5; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK_FALSE(b.called);
  CHECK(f.counters.prepared == 1);  // the new one waits for the name
  f.teardown_gate.release();
  REQUIRE(f.run_until([&] { return b.called; }));
  CHECK(b.status.ok());
  CHECK(f.counters.prepared == 2);
  CHECK(f.counters.torn_down == 1);
  CHECK(f.pools->find("again") != nullptr);
  f.shut_down();
}

TEST_CASE("at most kMaxPools, pools still tearing down included") {
  Fixture f;
  f.gate_prepare = false;
  f.gate_teardown = true;
  std::vector<Answer> answers(kMaxPools);
  std::string msg;
  for (size_t i = 0; i < kMaxPools; ++i) REQUIRE(f.pools->create(named("p" + std::to_string(i)), &msg, answers[i].fn()).ok());
  REQUIRE(f.run_until([&] { return answers.back().called; }));
  Answer extra;
  Status st = f.pools->create(named("one-more"), &msg, extra.fn());
  CHECK(st.error().code == kETooLarge);
  CHECK(msg == "at most " + std::to_string(kMaxPools) + " pools per server");
  // A deleted pool counts until its teardown is done.
  CHECK(f.pools->remove("p0"));
  REQUIRE(f.run_until([&] { return f.counters.stopped == 1; }));
  st = f.pools->create(named("one-more"), &msg, extra.fn());
  CHECK(st.error().code == kETooLarge);
  CHECK(msg.find("1 deleted, still shutting down") != std::string::npos);
  f.teardown_gate.release();
  REQUIRE(f.run_until([&] { return f.pools->tearing_down() == 0; }));
  REQUIRE(f.pools->create(named("one-more"), &msg, extra.fn()).ok());
  REQUIRE(f.run_until([&] { return extra.called; }));
  CHECK(extra.status.ok());
  f.shut_down();
}

TEST_CASE("a pool waiting for its name can itself be deleted") {
  Fixture f;
  f.gate_prepare = false;
  f.gate_teardown = true;
  Answer a, b;
  std::string msg;
  REQUIRE(f.pools->create(named("w"), &msg, a.fn()).ok());
  REQUIRE(f.run_until([&] { return a.called; }));
  CHECK(f.pools->remove("w"));
  REQUIRE(f.pools->create(named("w"), &msg, b.fn()).ok());
  CHECK(f.pools->remove("w"));
  REQUIRE(b.called);
  CHECK(b.status.error().code == kPoolDeleted);
  f.teardown_gate.release();
  REQUIRE(f.run_until([&] { return f.pools->tearing_down() == 0; }));
  CHECK(f.counters.prepared == 1);
  CHECK(f.counters.destroyed == 2);
  f.shut_down();
}

TEST_CASE("a failing prepare answers the error and tears the source down") {
  Fixture f;
  f.gate_prepare = false;
  f.fail = true;
  Answer a;
  std::string msg;
  REQUIRE(f.pools->create(named("bad"), &msg, a.fn()).ok());
  REQUIRE(f.run_until([&] { return a.called; }));
  REQUIRE_FALSE(a.status.ok());
  CHECK(a.message.find("fake prepare failed") != std::string::npos);
  CHECK(f.pools->find("bad") == nullptr);
  REQUIRE(f.run_until([&] { return f.counters.destroyed == 1; }));
  f.shut_down();
}

TEST_CASE("errors found at once never call done") {
  Fixture f;
  Answer a;
  std::string msg;
  Status st = f.pools->create(named("Bad_Name"), &msg, a.fn());
  CHECK(st.error().code == kEInvalid);
  st = f.pools->create(named("no-source"), &msg, a.fn());
  CHECK_FALSE(st.ok());
  CHECK(msg.find("no such runtime") != std::string::npos);
  CHECK_FALSE(a.called);
  f.shut_down();
}

TEST_CASE("shutdown during a creation and a teardown waits for both") {
  Fixture f;
  f.gate_teardown = true;
  Answer a, b;
  std::string msg;
  f.prepare_gate.release();
  REQUIRE(f.pools->create(named("live"), &msg, a.fn()).ok());
  REQUIRE(f.run_until([&] { return a.called; }));
  f.prepare_gate.open = false;  // the next prepare blocks
  CHECK(f.pools->remove("live"));
  REQUIRE(f.pools->create(named("slow"), &msg, b.fn()).ok());
  bool stopped = false;
  f.pools->stop([&] { stopped = true; });
  REQUIRE(b.called);
  CHECK(b.status.error().code == kPoolShutdown);
  CHECK(f.pools->create(named("late"), &msg, a.fn()).error().code == kPoolShutdown);
  for (int i = 0; i < 5; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK_FALSE(stopped);
  f.prepare_gate.release();
  f.teardown_gate.release();
  REQUIRE(f.run_until([&] { return stopped; }));
  CHECK(f.counters.torn_down == 2);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  f.pools.reset();
  CHECK(uv_loop_close(&f.loop) == 0);
  CHECK(f.counters.made == f.counters.destroyed);
}
