// PoolManager: every pool by name, created at start-up from the config or at run time by the
// management API; owns the shared LoopTimers and the Offload that runs pools' blocking start-up and
// teardown. Loop thread only.
//
// A pool's name is in exactly one of these states: free; being created (the source's prepare()
// runs on an Offload thread; find() does not see it); live (find() sees it); tearing down (deleted,
// its sessions ended, its threads being joined and its sandboxes reaped off the loop; find() does
// not see it). A creation under a name that is tearing down waits until the teardown has finished
// (cgroups and logs are named after the pool): the name is reusable at once from the client's
// side, safely.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pool/loop_timers.h"
#include "pool/offload.h"
#include "pool/pool.h"

namespace sp::pool {

// Makes the sandbox source for a pool's settings (the process tier's template spawner in the
// server, something lighter in tests). Called on the loop thread; must be quick (the blocking
// start-up is SandboxSource::prepare()). Each pool keeps a warm template (its cgroup ≈ 68 MiB with
// numpy, pandas and matplotlib) and threads: the number of pools is bounded.
inline constexpr size_t kMaxPools = 32;

using SourceFactory = std::function<Result<std::unique_ptr<SandboxSource>>(uv_loop_t* loop, const PoolSettings& s)>;

// Errors create() reports (Error::code), besides the source's own:
inline constexpr int kPoolDeleted = ECANCELED;  // deleted while it was being created
inline constexpr int kPoolShutdown = ESHUTDOWN; // the server stopped while it was being created

class PoolManager {
 public:
  // `status` ok: the pool is live (find() has it). Else `message` says why.
  using CreateDone = std::function<void(Status status, const std::string& message)>;

  PoolManager(uv_loop_t* loop, SourceFactory factory);
  PoolManager(const PoolManager&) = delete;
  PoolManager& operator=(const PoolManager&) = delete;

  // Creates and starts a pool without blocking the loop: the source's prepare() runs on an Offload
  // thread, then the pool starts on the loop thread and `done` runs. Returns an error (and never
  // calls `done`) when the request fails at once: invalid name (kEInvalid), the name is live or
  // being created (EEXIST), kMaxPools reached (kETooLarge), the server is stopping (kPoolShutdown),
  // the factory failed; `message` says why. Otherwise `done` runs exactly once, never synchronously.
  Status create(const PoolSettings& settings, std::string* message, CreateDone done);
  // The same, blocking the calling thread: for start-up, before the loop runs.
  Status create_now(const PoolSettings& settings, std::string* message);
  Pool* find(std::string_view name);
  const std::map<std::string, std::unique_ptr<Pool>, std::less<>>& pools() const { return pools_; }
  // Ends a live pool (its sessions end now; its threads and sandboxes go on an Offload thread), or
  // cancels a creation (its `done` gets kPoolDeleted now; what was prepared is torn down after).
  // False when no pool of that name is live or being created.
  bool remove(std::string_view name);
  // The settings of a pool being created (not yet live), or nullptr.
  const PoolSettings* creating_settings(std::string_view name) const;
  // Every pool being created, by name.
  std::vector<const PoolSettings*> creating_list() const;
  // Names being created or torn down (for tests and logs).
  size_t creating() const { return creating_.size(); }
  size_t tearing_down() const { return stopping_.size() + cancelled_.size(); }
  void render_metrics(std::string& out) const;
  // Stops every pool and cancels every creation (their `done` gets kPoolShutdown); `done` runs
  // when all have stopped, every offloaded job has finished and the handles are closed.
  void stop(std::function<void()> done);

 private:
  struct Creation {
    PoolSettings settings;
    CreateDone done;             // empty once answered
    std::unique_ptr<Pool> pool;  // made at once; prepared once the name is free of teardowns
    bool preparing = false;      // prepare() was handed to the offload thread
    Status prepared;             // written by the offload thread, read after its join
  };
  Status check_new(const PoolSettings& settings, std::string* message) const;
  Result<std::unique_ptr<Pool>> make_pool(const PoolSettings& settings, std::string* message);
  void begin_prepare(Creation* c);
  void finish_prepare(Creation* c);
  void answer(Creation* c, Status status, const std::string& message);
  // Stops `pool` (under `name`) and frees it when stopped; creations waiting for the name go on.
  void tear_down(const std::string& name, std::unique_ptr<Pool> pool);
  void teardown_finished(const std::string& name, Pool* pool);
  bool name_tearing_down(std::string_view name) const;
  void maybe_stopped();

  uv_loop_t* loop_;
  SourceFactory factory_;
  LoopTimers timers_;
  Offload offload_;
  std::map<std::string, std::unique_ptr<Pool>, std::less<>> pools_;
  std::map<std::string, std::unique_ptr<Creation>, std::less<>> creating_;
  // Creations cancelled while their prepare() ran: torn down when it returns.
  std::vector<std::unique_ptr<Creation>> cancelled_;
  std::multimap<std::string, std::unique_ptr<Pool>, std::less<>> stopping_;
  bool shutting_down_ = false;
  std::function<void()> on_stopped_;
};

}  // namespace sp::pool
