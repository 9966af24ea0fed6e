// ProcessSource: the process tier's SandboxSource, an adapter over sandbox/PoolSpawner (warm Python
// template, spawner and reaper threads, SPSC rings). Loop thread only, except prepare() (an Offload
// thread: it starts the PoolSpawner) and the wake-up, which the spawner thread sends with
// uv_async_send (the handle is made in the constructor, so a wake can never precede it).
#pragma once

#include <uv.h>

#include <deque>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "pool/sandbox_source.h"
#include "pool/settings.h"
#include "sandbox/pool_spawner.h"

namespace sp::pool {

struct ProcessSourceOptions {
  std::string agent_dir;    // directory holding sandpool_agent.py
  std::string runtime_dir;  // template.py + libsandpool_clone.so; empty: next to the binary
  // The micro-VM tier (pool/microvm_source.h) reuses this adapter with another template program.
  std::vector<std::string> template_cmd;  // empty: the Python template
  const char* tier = "process";
  // One execute before a clone counts as ready (ProcessSource::send_warm_up): the first request of
  // a session does not take the request path's copy-on-write faults, and each idle sandbox holds
  // those pages (≈ 150-200 KiB) instead.
  bool warm_up_execute = true;
  // Room in the template's cgroup per session the pool may hold, on top of its 2 GiB: a micro-VM
  // clone made ahead leaves its KVM kernel memory (≈ 1.1-1.5 MiB) charged there while it lives;
  // without the room a large pool would push the template into its cgroup's OOM killer.
  uint64_t template_memory_per_session_bytes = 0;
  bool prepare_next_during_clone = false;  // PoolTemplateConfig's
  bool netns_ahead = true;                // PoolTemplateConfig's
  bool direct_spares = false;             // PoolTemplateConfig's
  TemplateMemory template_memory = TemplateMemory::kShared;  // PoolTemplateConfig::memory (process tier only)
  uint32_t templates = 1;  // PoolTemplateConfig::templates; each may have two clones isolating at once
};

class ProcessSource : public SandboxSource {
 public:
  ProcessSource(uv_loop_t* loop, const PoolSettings& settings, ProcessSourceOptions options);
  ~ProcessSource() override;

  Status prepare() override;
  Status start(std::function<void()> on_ready) override;
  void set_wanted(size_t ready_wanted) override;
  void settings_changed(const PoolSettings& settings) override;
  std::optional<Sandbox> pop() override;
  size_t ready_count() const override;
  void release(Sandbox&& sandbox) override;
  void stop(Offload& offload, std::function<void()> on_stopped) override;
  SourceStats stats() const override;
  const char* tier() const override { return options_.tier; }

 private:
  // A clone whose isolation is done but whose agent has not said hello yet, or has and is
  // answering its warm-up execute.
  struct Warming {
    ProcessSource* owner = nullptr;
    ReadySandbox sandbox;
    uv_poll_t poll{};
    agent::FrameDecoder decoder;
    uint64_t since_ms = 0;
    bool greeted = false;  // hello received; the warm-up execute was sent
    std::list<Warming*>::iterator where;
  };
  static void on_wake(void* self);
  static void on_hello_readable(uv_poll_t* p, int status, int events);
  bool send_warm_up(Warming* w);
  void take_from_spawner();
  void update_spawner_target();
  uint64_t template_memory_bytes(const PoolSettings& s) const;
  void expire_warming();
  void end_warming(Warming* w, bool ready);
  void retry_give_back();

  uv_loop_t* loop_;
  PoolSettings settings_;
  ProcessSourceOptions options_;
  std::unique_ptr<PoolSpawner> spawner_;
  uv_async_t async_{};
  bool async_open_ = false;
  Status async_status_;     // of uv_async_init in the constructor
  bool started_ = false;    // start() ran: the spawner may be used from the loop thread
  std::function<void()> on_ready_;
  std::deque<ReadySandbox> unreturned_;  // the reaper's ring was full: retried on the next release
  std::list<Warming*> warming_;          // waiting for their agent's hello and warm-up reply
  std::deque<ReadySandbox> ready_;       // hello received: ready for a session (FIFO)
  uint64_t hello_failures_ = 0;
  size_t wanted_ = 0;
  bool stopping_ = false;
  std::string last_error_;
};

}  // namespace sp::pool
