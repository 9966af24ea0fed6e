// PoolManager: every pool by name, created at start-up from the config or at run time by the
// management API; owns the shared LoopTimers. Loop thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "pool/loop_timers.h"
#include "pool/pool.h"

namespace sp::pool {

// Makes the sandbox source for a pool's settings (the process tier's template spawner in the
// server, something lighter in tests). Called on the loop thread; may block for start-up.
// Each pool keeps a warm template (~90 MiB) and threads: the number of pools is bounded.
inline constexpr size_t kMaxPools = 32;

using SourceFactory = std::function<Result<std::unique_ptr<SandboxSource>>(uv_loop_t* loop, const PoolSettings& s)>;

class PoolManager {
 public:
  PoolManager(uv_loop_t* loop, SourceFactory factory);
  PoolManager(const PoolManager&) = delete;
  PoolManager& operator=(const PoolManager&) = delete;

  // Creates and starts a pool. Fails when the name is taken or the source cannot start.
  Status create(const PoolSettings& settings, std::string* message);
  Pool* find(std::string_view name);
  const std::map<std::string, std::unique_ptr<Pool>, std::less<>>& pools() const { return pools_; }
  // Ends a pool and its sessions; the pool object is freed when it has stopped.
  bool remove(std::string_view name);
  void render_metrics(std::string& out) const;
  // Stops every pool; `done` runs when all have stopped and the timers are closed.
  void stop(std::function<void()> done);

 private:
  uv_loop_t* loop_;
  SourceFactory factory_;
  LoopTimers timers_;
  std::map<std::string, std::unique_ptr<Pool>, std::less<>> pools_;
  std::vector<std::unique_ptr<Pool>> stopping_;
  size_t stops_outstanding_ = 0;
  std::function<void()> on_stopped_;
};

}  // namespace sp::pool
