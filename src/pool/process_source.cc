// ProcessSource: PoolSpawner's ready ring → Sandbox values; finished sandboxes → its reaper ring.
#include "pool/process_source.h"

#include <cstring>

#include "util/log.h"

namespace sp::pool {

ProcessSource::ProcessSource(uv_loop_t* loop, const PoolSettings& settings, ProcessSourceOptions options)
    : loop_(loop), settings_(settings), options_(std::move(options)) {}

ProcessSource::~ProcessSource() = default;

void ProcessSource::on_wake(void* self) {
  // Spawner thread: only the async send, which libuv allows from any thread.
  uv_async_send(&static_cast<ProcessSource*>(self)->async_);
}

Status ProcessSource::start(std::function<void()> on_ready) {
  on_ready_ = std::move(on_ready);
  int rc = uv_async_init(loop_, &async_, [](uv_async_t* a) {
    auto* self = static_cast<ProcessSource*>(a->data);
    if (self->on_ready_) self->on_ready_();
  });
  if (rc != 0) return Error{-rc, "uv_async_init"};
  async_.data = this;
  async_open_ = true;
  uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
  PoolTemplateConfig cfg;
  cfg.pool = settings_.name;
  cfg.agent_path = options_.agent_dir;
  cfg.runtime_dir = options_.runtime_dir;
  cfg.limits.memory_bytes = settings_.memory_bytes;
  cfg.limits.cpu_millis = static_cast<uint32_t>(settings_.cpu * 1000);
  cfg.data_bytes = settings_.data_size_bytes;
  cfg.ready_target = settings_.ready_session_instances;
  if (settings_.container_type == ContainerType::kShell) cfg.preload = "";
  auto sp = PoolSpawner::start(cfg, on_wake, this);
  if (!sp.ok()) return sp.error();
  spawner_ = std::move(sp).value();
  return {};
}

void ProcessSource::set_wanted(size_t ready_wanted) {
  if (spawner_) spawner_->set_ready_target(static_cast<uint32_t>(ready_wanted));
}

std::optional<Sandbox> ProcessSource::pop() {
  if (!spawner_) return std::nullopt;
  auto ready = spawner_->take();
  if (!ready) return std::nullopt;
  Sandbox sb;
  sb.id = ready->generation;
  sb.pid = ready->pid;
  sb.ready_ns = ready->ready_ns;
  sb.agent_fd = std::move(ready->agent_fd);
  // The rest (pidfd, cgroup) rides along until the sandbox is given back.
  sb.opaque = new ReadySandbox(std::move(*ready));
  return sb;
}

size_t ProcessSource::ready_count() const { return spawner_ ? spawner_->ready_count() : 0; }

void ProcessSource::retry_give_back() {
  while (!unreturned_.empty() && spawner_ && spawner_->give_back(std::move(unreturned_.front()))) {
    unreturned_.pop_front();
  }
}

void ProcessSource::release(Sandbox&& sandbox) {
  auto* rs = static_cast<ReadySandbox*>(sandbox.opaque);
  sandbox.opaque = nullptr;
  if (!rs) return;
  rs->agent_fd = std::move(sandbox.agent_fd);  // usually already closed by the session
  unreturned_.push_back(std::move(*rs));
  delete rs;
  retry_give_back();
}

void ProcessSource::stop(std::function<void()> on_stopped) {
  // ~PoolSpawner joins its threads and kills the template and every clone it still owns; clones
  // the reaper never got back die with their cgroups in the same sweep.
  retry_give_back();
  spawner_.reset();
  unreturned_.clear();
  if (async_open_) {
    async_open_ = false;
    auto* cb = new std::function<void()>(std::move(on_stopped));
    async_.data = cb;
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), [](uv_handle_t* h) {
      auto* f = static_cast<std::function<void()>*>(h->data);
      (*f)();
      delete f;
    });
    return;
  }
  on_stopped();
}

SourceStats ProcessSource::stats() const {
  SourceStats st;
  if (!spawner_) return st;
  const SpawnerStats& s = spawner_->stats();
  st.spawned = s.spawned.load(std::memory_order_relaxed);
  st.spawn_failures = s.failed.load(std::memory_order_relaxed);
  st.reaped = s.reaped.load(std::memory_order_relaxed);
  uint64_t err = s.last_error.load(std::memory_order_relaxed);
  if (err) st.last_error = std::strerror(static_cast<int>(err));
  return st;
}

}  // namespace sp::pool
