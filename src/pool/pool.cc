// Pool: allocation, waiting, refill targets, teardown and metrics.
#include "pool/pool.h"

#include "util/log.h"

namespace sp::pool {

Pool::Pool(uv_loop_t* loop, LoopTimers* timers, Offload* offload, PoolSettings settings, std::unique_ptr<SandboxSource> source)
    : loop_(loop), timers_(timers), offload_(offload), settings_(std::move(settings)), source_(std::move(source)) {
  uv_idle_init(loop_, &reaper_idle_);
  reaper_idle_.data = this;
}

Pool::~Pool() { timers_->cancel(&refill_timer_); }

Status Pool::start() {
  if (ContainerAccess* c = source_->containers()) {
    c->set_on_container_end([this](uint64_t id, const std::string& why) { on_container_end(id, why); });
  }
  SP_TRY(source_->start([this] { on_sandboxes_ready(); }));
  refill();
  LOG_INFO("pool %s: %s, %s tier, %u ready, at most %u sessions", settings_.name.c_str(),
           container_type_name(settings_.container_type), source_->tier(), settings_.ready_session_instances,
           settings_.max_concurrent_sessions);
  return {};
}

void Pool::update_settings(const PoolSettings& s) {
  ContainerType type = settings_.container_type;
  settings_ = s;
  settings_.container_type = type;
  source_->settings_changed(settings_);
  refill();
}

namespace {
constexpr uint64_t kRefillDelayMs = 5;
}  // namespace

size_t Pool::refill_target() const {
  size_t room = settings_.max_concurrent_sessions > sessions_.size() ? settings_.max_concurrent_sessions - sessions_.size() : 0;
  // Waiters need sandboxes beyond the standing reserve.
  return std::min<size_t>(settings_.ready_session_instances + waiters_.size(), room);
}

void Pool::refill(bool after_allocation) {
  if (stopping_) return;
  size_t wanted = refill_target();
  bool raise = wanted > wanted_now_;
  if ((raise || after_allocation) && waiters_.empty() && source_->ready_count() > 0) {
    if (!refill_timer_.armed()) timers_->arm_in(&refill_timer_, kRefillDelayMs);
    return;
  }
  timers_->cancel(&refill_timer_);
  wanted_now_ = wanted;
  source_->set_wanted(wanted);
}

void Pool::on_refill_timer(TimerEntry* e, uint64_t) {
  Pool* p = OwnedTimer<Pool>::owner_of(e);
  if (p->stopping_) return;
  p->wanted_now_ = p->refill_target();
  p->source_->set_wanted(p->wanted_now_);
}

void Pool::on_container_end(uint64_t sandbox_id, const std::string& why) {
  for (auto& [identifier, session] : sessions_) {
    if (session->sandbox_id() != sandbox_id) continue;
    ++container_ends_;
    LOG_INFO("pool %s: session %s: %s", settings_.name.c_str(), identifier.c_str(), why.c_str());
    session->destroy("container ended");
    return;
  }
}

Session* Pool::find(const std::string& identifier) {
  auto it = sessions_.find(identifier);
  return it == sessions_.end() ? nullptr : it->second.get();
}

Session* Pool::reuse(const std::string& identifier) {
  if (stopping_) return nullptr;
  Session* s = find(identifier);
  if (s) s->touch();
  return s;
}

Session* Pool::bind(const std::string& identifier, Sandbox&& sandbox, AcquireError* error) {
  auto s = std::make_unique<Session>(this, identifier, std::move(sandbox), unix_now_ms());
  Status st = s->start(loop_);
  if (!st.ok()) {
    error->status = 500;
    error->code = "SessionStartFailed";
    error->message = "the sandbox could not be attached: " + st.error().message();
    s->destroy("attach failed");
    return nullptr;
  }
  Session* raw = s.get();
  sessions_.emplace(identifier, std::move(s));
  ++allocations_;
  // Containers' output is logged as "container N" (container_source.cc): say whose N is.
  if (source_->containers())
    LOG_INFO("pool %s: session %s: container %llu", settings_.name.c_str(), identifier.c_str(),
             static_cast<unsigned long long>(raw->sandbox_id()));
  return raw;
}

void Pool::acquire(const std::string& identifier, AcquireFn done) {
  if (stopping_) {
    AcquireError e{503, "ServiceUnavailable", "the pool is shutting down", 0};
    done(nullptr, &e);
    return;
  }
  if (Session* s = reuse(identifier)) {
    done(s, nullptr);
    return;
  }
  if (sessions_.size() + waiters_.size() >= settings_.max_concurrent_sessions) {
    ++rejected_full_;
    AcquireError e{settings_.pool_full_status, "SessionPoolFull",
                   "session pool " + settings_.name + " has reached maxConcurrentSessions (" +
                       std::to_string(settings_.max_concurrent_sessions) + ")",
                   5};
    done(nullptr, &e);
    return;
  }
  if (auto sb = source_->pop()) {
    AcquireError e;
    allocation_wait_.observe_ns(0);
    Session* s = bind(identifier, std::move(*sb), &e);
    refill(/*after_allocation=*/true);
    if (s) done(s, nullptr); else done(nullptr, &e);
    return;
  }
  if (settings_.allocation_wait_ms == 0) {
    AcquireError e{503, "NoReadySession", "no ready session in pool " + settings_.name, 1};
    done(nullptr, &e);
    return;
  }
  auto* w = new Waiter{};
  w->pool = this;
  w->identifier = identifier;
  w->done = std::move(done);
  waiters_.push_back(w);
  timers_->arm_in(&w->timeout, settings_.allocation_wait_ms);
  refill();
}

void Pool::on_wait_timeout(TimerEntry* e, uint64_t) {
  auto* w = OwnedTimer<Waiter>::owner_of(e);
  Pool* p = w->pool;
  for (auto it = p->waiters_.begin(); it != p->waiters_.end(); ++it) {
    if (*it == w) {
      p->waiters_.erase(it);
      break;
    }
  }
  ++p->wait_timeouts_;
  SourceStats st = p->source_->stats();
  AcquireError err{503, "NoReadySession",
                   "no sandbox became ready in " + std::to_string(p->settings_.allocation_wait_ms) + " ms" +
                       (st.last_error.empty() ? std::string() : " (last spawn error: " + st.last_error + ")"),
                   1};
  AcquireFn done = std::move(w->done);
  delete w;
  done(nullptr, &err);
  p->refill();
}

void Pool::on_sandboxes_ready() {
  while (!waiters_.empty() && !stopping_) {
    Waiter* w = waiters_.front();
    Session* existing = find(w->identifier);
    std::optional<Sandbox> sb;
    if (!existing) {
      sb = source_->pop();
      if (!sb) break;
    }
    waiters_.pop_front();
    timers_->cancel(&w->timeout);
    AcquireFn done = std::move(w->done);
    uint64_t waited_ms = timers_->now_ms() - (w->timeout.deadline_ms() - settings_.allocation_wait_ms);
    std::string id = std::move(w->identifier);
    delete w;
    allocation_wait_.observe_ns(waited_ms * 1000000);
    if (existing) {
      existing->touch();
      done(existing, nullptr);
      continue;
    }
    AcquireError e;
    Session* s = bind(id, std::move(*sb), &e);
    if (s) done(s, nullptr); else done(nullptr, &e);
  }
  refill();
}

void Pool::session_ended(Session* s, Sandbox&& sandbox) {
  source_->release(std::move(sandbox));
  auto it = sessions_.find(s->identifier());
  if (it != sessions_.end() && it->second.get() == s) {
    ended_.push_back(std::move(it->second));
    sessions_.erase(it);
  }
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&reaper_idle_))) {
    uv_idle_start(&reaper_idle_, [](uv_idle_t* h) { static_cast<Pool*>(h->data)->free_ended(); });
  }
  refill();
}

void Pool::free_ended() {
  uv_idle_stop(&reaper_idle_);
  auto ended = std::move(ended_);
  ended_.clear();
  ended.clear();
  if (stopping_ && sessions_.empty() && on_stopped_) {
    auto cb = std::move(on_stopped_);
    on_stopped_ = nullptr;
    source_->stop(*offload_, [this, cb = std::move(cb)] {
      // `cb` may free the pool: it runs once the idle handle is closed, not before.
      on_stopped_ = cb;
      uv_close(reinterpret_cast<uv_handle_t*>(&reaper_idle_), [](uv_handle_t* h) {
        auto* self = static_cast<Pool*>(h->data);
        auto done = std::move(self->on_stopped_);
        self->on_stopped_ = nullptr;
        done();
      });
    });
  }
}

std::vector<Session*> Pool::sessions_by_age() const {
  std::vector<Session*> out;
  out.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) out.push_back(s.get());
  std::sort(out.begin(), out.end(), [](Session* a, Session* b) {
    if (a->created_unix_ms() != b->created_unix_ms()) return a->created_unix_ms() < b->created_unix_ms();
    return a->identifier() < b->identifier();
  });
  return out;
}

void Pool::stop(std::function<void()> done) {
  stopping_ = true;
  timers_->cancel(&refill_timer_);
  on_stopped_ = std::move(done);
  source_->set_wanted(0);
  while (!waiters_.empty()) {
    Waiter* w = waiters_.front();
    waiters_.pop_front();
    timers_->cancel(&w->timeout);
    AcquireError e{503, "ServiceUnavailable", "the pool is shutting down", 0};
    AcquireFn fn = std::move(w->done);
    delete w;
    fn(nullptr, &e);
  }
  std::vector<Session*> all;
  for (auto& [id, s] : sessions_) all.push_back(s.get());
  for (Session* s : all) s->destroy("server stopping");
  // free_ended() finishes the stop once the ended sessions are freed (also when there were none).
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&reaper_idle_))) {
    uv_idle_start(&reaper_idle_, [](uv_idle_t* h) { static_cast<Pool*>(h->data)->free_ended(); });
  }
}

void Pool::count_execution(agent::ExecStatus status, uint64_t exec_time_us) {
  size_t i = static_cast<size_t>(status);
  if (i < 6) ++executions_by_status_[i];
  execution_latency_.observe_ns(exec_time_us * 1000);
}

void Pool::render_metrics(std::string& out, const std::vector<const Pool*>& pools) {
  auto labels = [](const Pool* p) {
    std::string pl = "pool=\"";
    append_label_value(pl, p->settings_.name);
    pl += '"';
    return pl;
  };
  struct Family {
    const char* name;
    const char* type;
    const char* help;
    uint64_t (*value)(const Pool*, const SourceStats&);
  };
  static const Family kCounters[] = {
      {"sandpool_pool_allocations_total", "counter", "Identifiers bound to a ready sandbox.",
       [](const Pool* p, const SourceStats&) { return p->allocations_; }},
      {"sandpool_pool_expiries_total", "counter", "Sessions ended by their cooldown (or maxAlivePeriodInSeconds).",
       [](const Pool* p, const SourceStats&) { return p->expiries_; }},
      {"sandpool_pool_container_ends_total", "counter", "Custom-container sessions ended by their container (exit, kill, liveness).",
       [](const Pool* p, const SourceStats&) { return p->container_ends_; }},
      {"sandpool_pool_rejected_full_total", "counter", "Requests refused because the pool was full.",
       [](const Pool* p, const SourceStats&) { return p->rejected_full_; }},
      {"sandpool_pool_allocation_wait_timeouts_total", "counter", "Requests that waited in vain for a ready sandbox.",
       [](const Pool* p, const SourceStats&) { return p->wait_timeouts_; }},
      {"sandpool_pool_spawned_total", "counter", "Sandboxes made ready.",
       [](const Pool*, const SourceStats& st) { return st.spawned; }},
      {"sandpool_pool_spawn_failures_total", "counter", "Sandbox creations that failed.",
       [](const Pool*, const SourceStats& st) { return st.spawn_failures; }},
      {"sandpool_pool_reaped_total", "counter", "Sandboxes destroyed after use.",
       [](const Pool*, const SourceStats& st) { return st.reaped; }},
      {"sandpool_pool_container_log_lines_total", "counter", "Lines of custom containers' output written to the server's log.",
       [](const Pool*, const SourceStats& st) { return st.log_lines; }},
      {"sandpool_pool_container_log_dropped_lines_total", "counter", "Lines of custom containers' output dropped over --container-log-rate.",
       [](const Pool*, const SourceStats& st) { return st.log_dropped; }},
      {"sandpool_pool_waiting_requests", "gauge", "Requests waiting for a ready sandbox.",
       [](const Pool* p, const SourceStats&) { return static_cast<uint64_t>(p->waiters_.size()); }},
  };
  std::vector<SourceStats> stats;
  for (const Pool* p : pools) stats.push_back(p->source_->stats());
  metric_header(out, "sandpool_pool_sessions", "gauge", "Sessions by lifecycle state (API.md section 5).");
  for (size_t i = 0; i < pools.size(); ++i) {
    const Pool* p = pools[i];
    std::string pl = labels(p);
    metric_value(out, "sandpool_pool_sessions", pl + ",state=\"Pending\"", stats[i].pending);
    metric_value(out, "sandpool_pool_sessions", pl + ",state=\"Ready\"", static_cast<uint64_t>(p->source_->ready_count()));
    metric_value(out, "sandpool_pool_sessions", pl + ",state=\"Allocated\"", static_cast<uint64_t>(p->sessions_.size()));
    metric_value(out, "sandpool_pool_sessions", pl + ",state=\"Deleting\"", static_cast<uint64_t>(p->ended_.size()));
  }
  metric_header(out, "sandpool_pool_isolation", "gauge", "The isolation tier a pool's sandboxes use (value 1).");
  for (const Pool* p : pools) metric_value(out, "sandpool_pool_isolation", labels(p) + ",tier=\"" + p->source_->tier() + "\"", uint64_t{1});
  for (const Family& f : kCounters) {
    metric_header(out, f.name, f.type, f.help);
    for (size_t i = 0; i < pools.size(); ++i) metric_value(out, f.name, labels(pools[i]), f.value(pools[i], stats[i]));
  }
  metric_header(out, "sandpool_pool_executions_total", "counter", "Executions answered by the agent, by status.");
  for (const Pool* p : pools) {
    for (int i = 0; i < 6; ++i) {
      metric_value(out, "sandpool_pool_executions_total",
                   labels(p) + ",status=\"" + agent::exec_status_name(static_cast<agent::ExecStatus>(i)) + "\"",
                   p->executions_by_status_[i]);
    }
  }
  metric_header(out, "sandpool_pool_execution_duration_seconds", "histogram", "Execution time measured by the agent.");
  for (const Pool* p : pools) p->execution_latency_.render(out, "sandpool_pool_execution_duration_seconds", labels(p));
  metric_header(out, "sandpool_pool_allocation_wait_seconds", "histogram", "Time a new identifier waited for a ready sandbox.");
  for (const Pool* p : pools) p->allocation_wait_.render(out, "sandpool_pool_allocation_wait_seconds", labels(p));
}

}  // namespace sp::pool
