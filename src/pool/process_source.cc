// ProcessSource: PoolSpawner's ready ring → Sandbox values; finished sandboxes → its reaper ring.
#include "pool/process_source.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "util/log.h"

namespace sp::pool {

namespace {
constexpr uint64_t kHelloTimeoutMs = 30000;  // spawn → hello → warm-up reply
constexpr uint64_t kWarmUpRequestId = 1;
// The cell every clone runs once before it counts as ready: the common first cell of a session.
constexpr std::string_view kWarmUpCell = "print(1)";
}  // namespace

ProcessSource::ProcessSource(uv_loop_t* loop, const PoolSettings& settings, ProcessSourceOptions options)
    : loop_(loop), settings_(settings), options_(std::move(options)) {
  // Made here, on the loop thread, before prepare() starts the spawner thread that sends to it.
  int rc = uv_async_init(loop_, &async_, [](uv_async_t* a) {
    static_cast<ProcessSource*>(a->data)->take_from_spawner();
  });
  if (rc != 0) {
    async_status_ = Error{-rc, "uv_async_init"};
    return;
  }
  async_.data = this;
  async_open_ = true;
  uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
}

ProcessSource::~ProcessSource() = default;

void ProcessSource::on_wake(void* self) {
  // Spawner thread: only the async send, which libuv allows from any thread.
  uv_async_send(&static_cast<ProcessSource*>(self)->async_);
}

Status ProcessSource::prepare() {
  SP_TRY(async_status_);
  PoolTemplateConfig cfg;
  cfg.pool = settings_.name;
  cfg.agent_path = options_.agent_dir;
  cfg.runtime_dir = options_.runtime_dir;
  cfg.limits.memory_bytes = settings_.memory_bytes;
  cfg.limits.cpu_millis = static_cast<uint32_t>(settings_.cpu * 1000);
  cfg.data_bytes = settings_.data_size_bytes;
  cfg.ready_target = settings_.ready_session_instances;
  if (settings_.container_type == ContainerType::kShell) cfg.preload = "";
  cfg.template_cmd = options_.template_cmd;
  cfg.prepare_next_during_clone = options_.prepare_next_during_clone;
  cfg.netns_ahead = options_.netns_ahead;
  cfg.direct_spares = options_.direct_spares;
  cfg.memory = options_.template_memory;
  cfg.templates = std::max<uint32_t>(1, options_.templates);
  cfg.max_pending = std::max<uint32_t>(cfg.max_pending, 2 * cfg.templates);
  cfg.host_warms_up = options_.warm_up_execute;
  cfg.template_memory_bytes = template_memory_bytes(settings_);
  // Blocks until the template has imported its libraries (~0.5 s, seconds on a loaded machine).
  auto sp = PoolSpawner::start(cfg, on_wake, this);
  if (!sp.ok()) return sp.error();
  spawner_ = std::move(sp).value();
  return {};
}

Status ProcessSource::start(std::function<void()> on_ready) {
  on_ready_ = std::move(on_ready);
  started_ = true;
  take_from_spawner();  // clones pushed before start() woke nobody who would take them
  return {};
}

uint64_t ProcessSource::template_memory_bytes(const PoolSettings& s) const {
  return (2ull << 30) + uint64_t{s.max_concurrent_sessions} * options_.template_memory_per_session_bytes;
}

void ProcessSource::settings_changed(const PoolSettings& settings) {
  // Before start(), prepare() may be reading settings_ on its thread (the pool manager refuses
  // changes to a pool being created anyway).
  if (!started_ || !spawner_) return;
  uint64_t before = template_memory_bytes(settings_);
  settings_.max_concurrent_sessions = settings.max_concurrent_sessions;
  uint64_t now = template_memory_bytes(settings_);
  if (now == before) return;
  if (Status st = spawner_->set_template_memory(now); !st.ok()) {
    LOG_WARN("pool %s: template cgroup limit: %s", settings_.name.c_str(), st.error().message().c_str());
  }
}

void ProcessSource::set_wanted(size_t ready_wanted) {
  wanted_ = ready_wanted;
  update_spawner_target();
}

// The spawner counts only its own ring; clones already taken from it (warming or ready here)
// count too, so its target is what is still missing. Called whenever either side changes.
void ProcessSource::update_spawner_target() {
  size_t held = ready_.size() + warming_.size();
  size_t want = wanted_ > held ? wanted_ - held : 0;
  if (spawner_) spawner_->set_ready_target(static_cast<uint32_t>(want));
}

void ProcessSource::expire_warming() {
  uint64_t now = uv_now(loop_);
  std::vector<Warming*> late;
  for (Warming* w : warming_) {
    if (now - w->since_ms > kHelloTimeoutMs) late.push_back(w);
  }
  for (Warming* w : late) {
    LOG_WARN("pool %s: a clone's agent was not ready (hello and warm-up execute) in %llu ms; discarding it",
             settings_.name.c_str(), static_cast<unsigned long long>(kHelloTimeoutMs));
    end_warming(w, false);
  }
}

// Readiness includes the agent: a clone is handed out only after its hello and one execute, so a
// session's first request never waits for the agent to start, and a clone whose agent fails never
// reaches one.
void ProcessSource::take_from_spawner() {
  if (!started_) return;  // prepare() may still be writing spawner_ on its thread
  while (spawner_) {
    auto sb = spawner_->take();
    if (!sb) break;
    auto* w = new Warming();  // not {}: clang refuses copy-list-initializing the explicit FrameDecoder()
    w->owner = this;
    w->sandbox = std::move(*sb);
    w->since_ms = uv_now(loop_);
    w->poll.data = w;
    if (uv_poll_init(loop_, &w->poll, w->sandbox.agent_fd.get()) != 0) {
      ++hello_failures_;
      unreturned_.push_back(std::move(w->sandbox));
      delete w;
      continue;
    }
    warming_.push_front(w);
    w->where = warming_.begin();
    uv_poll_start(&w->poll, UV_READABLE | UV_DISCONNECT, on_hello_readable);
  }
  expire_warming();
  update_spawner_target();
  retry_give_back();
}

// After the hello, one real execute over the same socket: the agent's hello-time warm-up cell
// runs inside the worker, but the request path itself (reading and decoding a frame, arming the
// deadline, encoding and sending the reply) would otherwise take its copy-on-write faults and
// cold caches on the first request of a session. The cell leaves no names behind, and with the
// warm-up flag no compiled code either (a session's own print(1) is compiled anew); it still runs
// at the spawn CPU weight. Not counted as an execution anywhere. Costs each idle sandbox the
// pages it copied (≈ 150-200 KiB): ProcessSourceOptions::warm_up_execute.
bool ProcessSource::send_warm_up(Warming* w) {
  std::string out;
  agent::FrameEncoder e(&out);
  agent::ExecuteRequest req;
  req.timeout_ms = 10'000;
  req.code = kWarmUpCell;
  req.warm_up = true;
  if (!agent::encode_execute_request(e, kWarmUpRequestId, req).ok()) return false;
  // A few dozen bytes into an idle socket: one non-blocking send takes them all or fails.
  ssize_t n = ::send(w->sandbox.agent_fd.get(), out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  return n == static_cast<ssize_t>(out.size());
}

void ProcessSource::on_hello_readable(uv_poll_t* p, int status, int events) {
  auto* w = static_cast<Warming*>(p->data);
  ProcessSource* self = w->owner;
  if (status < 0) return self->end_warming(w, false);
  (void)events;
  // SAFETY: a non-blocking read into the decoder's own buffer, at most its prepared size.
  char* buf = w->decoder.prepare(4096);
  ssize_t n = ::recv(w->sandbox.agent_fd.get(), buf, 4096, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) return self->end_warming(w, false);
  w->decoder.commit(static_cast<size_t>(n));
  auto frame = w->decoder.next();
  if (!frame.ok()) return self->end_warming(w, false);
  if (!frame.value()) return;  // the frame is not complete yet
  const agent::Frame& f = *frame.value();
  // Nothing follows a hello or the warm-up reply until the host asks, so no byte is left in the
  // decoder when either is complete.
  if (w->decoder.buffered_bytes() != 0) return self->end_warming(w, false);
  if (!w->greeted) {
    bool hello = f.header.type == agent::FrameType::kHello && agent::decode_hello(f).ok();
    if (!hello) return self->end_warming(w, false);
    if (!self->options_.warm_up_execute) return self->end_warming(w, true);
    if (!self->send_warm_up(w)) return self->end_warming(w, false);
    w->greeted = true;
    return;
  }
  auto reply = f.header.type == agent::FrameType::kExecuteReply && f.header.request_id == kWarmUpRequestId
                   ? agent::decode_execute_reply(f)
                   : Result<agent::ExecuteReply>(Error{EPROTO, "not the warm-up reply"});
  self->end_warming(w, reply.ok() && reply->status == agent::ExecStatus::kSuccess);
}

void ProcessSource::end_warming(Warming* w, bool ready) {
  warming_.erase(w->where);
  if (ready) {
    w->sandbox.foreground();  // its start-up ran in the background (spawn_cpu_weight); now it may serve
    ready_.push_back(std::move(w->sandbox));
  } else {
    ++hello_failures_;
    last_error_ = "a clone's agent did not say hello or failed its warm-up execute";
    unreturned_.push_back(std::move(w->sandbox));
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) { delete static_cast<Warming*>(h->data); });
  retry_give_back();
  if (!stopping_) update_spawner_target();
  if (ready && on_ready_) on_ready_();
}

std::optional<Sandbox> ProcessSource::pop() {
  // A clone dies with its template; skip (and reap) any that died while waiting.
  while (!ready_.empty() && !ready_.front().alive()) {
    unreturned_.push_back(std::move(ready_.front()));
    ready_.pop_front();
    ++hello_failures_;
  }
  retry_give_back();
  expire_warming();
  if (ready_.empty()) return std::nullopt;
  std::optional<ReadySandbox> ready = std::move(ready_.front());
  ready_.pop_front();
  // No spawner target update here: the pool raises its target itself (with a short delay).
  Sandbox sb;
  sb.id = ready->generation;
  sb.pid = ready->pid;
  sb.ready_ns = ready->ready_ns;
  sb.agent_fd = std::move(ready->agent_fd);
  // The rest (pidfd, cgroup) rides along until the sandbox is given back.
  sb.opaque = new ReadySandbox(std::move(*ready));
  return sb;
}

size_t ProcessSource::ready_count() const { return ready_.size(); }

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

void ProcessSource::stop(Offload& offload, std::function<void()> on_stopped) {
  // ~PoolSpawner joins its threads and kills the template and every clone it still owns; clones
  // the reaper never got back die with their cgroups in the same sweep. That blocks (the reaper
  // finishing its queue, the template's exit): it runs on the offload thread. The async handle
  // stays open until then, since the spawner thread may still send to it.
  stopping_ = true;
  while (!warming_.empty()) end_warming(warming_.front(), false);
  while (!ready_.empty()) {
    unreturned_.push_back(std::move(ready_.front()));
    ready_.pop_front();
  }
  retry_give_back();
  auto finish = [this, on_stopped = std::move(on_stopped)]() mutable {
    if (!async_open_) return on_stopped();
    async_open_ = false;
    auto* cb = new std::function<void()>(std::move(on_stopped));
    async_.data = cb;
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), [](uv_handle_t* h) {
      auto* f = static_cast<std::function<void()>*>(h->data);
      (*f)();
      delete f;
    });
  };
  if (!spawner_ && unreturned_.empty()) return finish();
  auto teardown = std::make_shared<std::pair<std::unique_ptr<PoolSpawner>, std::deque<ReadySandbox>>>(
      std::move(spawner_), std::move(unreturned_));
  unreturned_.clear();
  offload.run([teardown] {
    teardown->first.reset();
    teardown->second.clear();
  }, std::move(finish));
}

SourceStats ProcessSource::stats() const {
  SourceStats st;
  if (!spawner_) return st;
  const SpawnerStats& s = spawner_->stats();
  st.spawned = s.spawned.load(std::memory_order_relaxed);
  st.spawn_failures = s.failed.load(std::memory_order_relaxed);
  st.reaped = s.reaped.load(std::memory_order_relaxed);
  st.spawn_failures += hello_failures_;
  st.pending = warming_.size();
  uint64_t err = s.last_error.load(std::memory_order_relaxed);
  if (err) st.last_error = std::strerror(static_cast<int>(err));
  if (st.last_error.empty()) st.last_error = last_error_;
  return st;
}

}  // namespace sp::pool
