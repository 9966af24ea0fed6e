// ContainerSource: the SandboxSource of a CustomContainer pool: sandboxes of the process tier
// running an OCI image, Ready once their startup probe passes; not the HTTP proxy (src/proxy/).
//
// Threading: every public method but prepare() runs on the loop thread (the SandboxSource
// contract). prepare() blocks, on an Offload thread: it imports the image (seconds for a large one,
// once per digest), reclaims a dead run's leftovers and starts the threads. The spawner and reaper
// threads (spawner.h) create and destroy sandboxes; probes, death watching (init's status pipe),
// liveness and upstream connections run on the loop thread, non-blocking. stop() leaves joining
// the threads and reaping to an Offload thread.
//
// Callbacks: on_ready (start) runs when a sandbox became Ready; the container-end callback runs
// when a popped sandbox ends on its own (never synchronously from pop()/release()). Both may call
// back into the source (pop, release) while they run.
#pragma once

#include <uv.h>

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "container/launch.h"
#include "container/log_lines.h"
#include "image/oci_import.h"
#include "pool/sandbox_source.h"
#include "pool/settings.h"

namespace sp::container {

class ContainerSpawner;
struct Spawned;

struct ContainerSourceOptions {
  std::string image_store_dir;       // images unpacked here per digest; run/ below it holds layers
                                     // being assembled (every ancestor must be searchable: o+x)
  std::string init_path;             // static sandpool-init; empty: next to the sandpool binary
  image::ImportLimits import_limits;
  uint32_t max_backoff_ms = 30000;   // spawn retry delay after consecutive failures (from 100 ms)
  uint32_t log_lines_per_second = 100;  // each container's stdout+stderr into our log (log_lines.h);
                                        // 0: /dev/null
};

class ContainerSource : public pool::SandboxSource, public pool::ContainerAccess {
 public:
  ContainerSource(uv_loop_t* loop, const pool::PoolSettings& settings, ContainerSourceOptions options);
  ~ContainerSource() override;  // call stop() first and wait for on_stopped

  // SandboxSource.
  Status prepare() override;
  Status start(std::function<void()> on_ready) override;
  void set_wanted(size_t ready_wanted) override;
  std::optional<pool::Sandbox> pop() override;
  size_t ready_count() const override { return ready_.size(); }
  void release(pool::Sandbox&& sandbox) override;
  void stop(pool::Offload& offload, std::function<void()> on_stopped) override;
  pool::SourceStats stats() const override;
  const char* tier() const override { return "process"; }
  pool::ContainerAccess* containers() override { return this; }

  // ContainerAccess.
  Result<UniqueFd> open_upstream(const pool::Sandbox& sandbox) override;
  void set_on_container_end(std::function<void(uint64_t, const std::string&)> fn) override { on_end_ = std::move(fn); }

  // What prepare() resolved (valid after a successful start): for logs and tests.
  const image::ImageInfo& image() const { return image_; }
  const Launch& launch() const { return launch_; }
  // Spawn begun → startup probe passed, of the most recent Ready sandbox (0: none yet).
  uint64_t last_spawn_to_ready_ns() const { return last_spawn_to_ready_ns_; }

  struct Box;
  struct Probe;

 private:
  static void on_wake(void* self);
  void take_spawned();
  void refill();
  void adopt(Spawned&& s);
  void schedule_probe(Box* b, uint64_t delay_ms);
  void start_probe(Box* b);
  void probe_done(Box* b, bool ok, const std::string& detail);
  void abandon_probe(Box* b);
  void on_status(Box* b);
  void become_ready(Box* b);
  void fail_starting(Box* b, const std::string& why);
  void end_allocated(Box* b, const std::string& why);
  void discard(Box* b);
  void note_failure(const std::string& why);
  Result<UniqueFd> connect_in(const Box* b, uint16_t port);
  std::string death_reason(Box* b);
  void closed_one();
  void watch_output(Box* b);
  static void on_output(uv_poll_t* p, int status, int events);
  bool read_output(Box* b, bool drain);
  void pause_output(Box* b);
  void log_failed_spawn_output(Spawned& s);
  LogLines::Emit log_emitter(uint64_t id) const;

  uv_loop_t* loop_;
  pool::PoolSettings settings_;
  ContainerSourceOptions options_;
  pool::ProbeSettings startup_;
  image::ImageInfo image_;
  Launch launch_;
  UniqueFd host_netns_;
  std::unique_ptr<ContainerSpawner> spawner_;
  uv_async_t async_{};
  bool async_open_ = false;
  Status async_status_;     // of uv_async_init in the constructor
  bool started_ = false;    // start() ran: spawner_ may be used from the loop thread
  bool teardown_pending_ = false;  // stop(): the spawner is being joined on the offload thread
  uv_timer_t log_timer_{};  // resumes reading the output of containers paused over their log rate
  bool log_timer_open_ = false;
  std::vector<Box*> log_paused_;
  uint64_t log_lines_ = 0, log_dropped_ = 0;
  uv_timer_t backoff_timer_{};
  bool backoff_open_ = false;
  bool in_backoff_ = false;
  uint32_t consecutive_failures_ = 0;
  std::function<void()> on_ready_;
  std::function<void(uint64_t, const std::string&)> on_end_;
  std::list<Box*> boxes_;   // every live box (starting, ready, allocated, ended-not-released)
  std::list<Box*> ready_;   // FIFO of Ready boxes
  size_t starting_ = 0;     // boxes waiting for their startup probe
  size_t outstanding_ = 0;  // spawns requested and not yet taken
  size_t wanted_ = 0;
  bool stopping_ = false;
  uint64_t spawned_ = 0, failures_ = 0;
  uint64_t last_spawn_to_ready_ns_ = 0;
  std::string last_error_;
  size_t closing_ = 0;      // handles being closed
  std::function<void()> on_stopped_;
};

}  // namespace sp::container
