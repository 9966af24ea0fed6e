// PoolManager: creation (prepared off the loop), removal, teardown, shutdown and metrics of all pools.
#include "pool/pool_manager.h"

#include "util/log.h"

namespace sp::pool {

PoolManager::PoolManager(uv_loop_t* loop, SourceFactory factory)
    : loop_(loop), factory_(std::move(factory)), timers_(loop), offload_(loop) {}

Status PoolManager::check_new(const PoolSettings& settings, std::string* message) const {
  if (shutting_down_) {
    *message = "the server is shutting down";
    return Error{kPoolShutdown, "create pool"};
  }
  if (!valid_pool_name(settings.name)) {
    *message = "pool names are 1-63 characters of a-z, 0-9 and '-'";
    return Error{kEInvalid, "create pool"};
  }
  if (pools_.count(settings.name)) {
    *message = "pool " + settings.name + " exists";
    return Error{EEXIST, "create pool"};
  }
  if (creating_.count(settings.name)) {
    *message = "pool " + settings.name + " is being created";
    return Error{EEXIST, "create pool"};
  }
  // Pools still tearing down hold their threads, templates and sandboxes: they count, or a client
  // deleting and creating in a loop could hold any number of them at once.
  if (pools_.size() + creating_.size() + tearing_down() >= kMaxPools) {
    *message = "at most " + std::to_string(kMaxPools) + " pools per server";
    if (tearing_down() > 0) *message += " (" + std::to_string(tearing_down()) + " deleted, still shutting down: try again shortly)";
    return Error{kETooLarge, "create pool"};
  }
  return {};
}

Result<std::unique_ptr<Pool>> PoolManager::make_pool(const PoolSettings& settings, std::string* message) {
  auto source = factory_(loop_, settings);
  if (!source.ok()) {
    *message = "the pool's sandboxes cannot start: " + source.error().message();
    return source.error();
  }
  return std::make_unique<Pool>(loop_, &timers_, &offload_, settings, std::move(source).value());
}

Status PoolManager::create(const PoolSettings& settings, std::string* message, CreateDone done) {
  SP_TRY(check_new(settings, message));
  SP_TRY_ASSIGN(std::unique_ptr<Pool> pool, make_pool(settings, message));
  auto c = std::make_unique<Creation>();
  c->settings = settings;
  c->done = std::move(done);
  c->pool = std::move(pool);
  Creation* raw = c.get();
  creating_.emplace(settings.name, std::move(c));
  // A pool of the same name still tearing down: prepare when it is gone (teardown_finished).
  if (!name_tearing_down(settings.name)) begin_prepare(raw);
  return {};
}

void PoolManager::begin_prepare(Creation* c) {
  c->preparing = true;
  Pool* p = c->pool.get();
  offload_.run([c, p] { c->prepared = p->prepare(); }, [this, c] { finish_prepare(c); });
}

void PoolManager::finish_prepare(Creation* c) {
  const std::string name = c->settings.name;
  std::unique_ptr<Creation> owned;
  auto it = creating_.find(name);
  if (it != creating_.end() && it->second.get() == c) {
    owned = std::move(it->second);
    creating_.erase(it);
  } else {
    // Cancelled (deleted, or the server stopping) while prepare() ran: its answer went out then.
    for (auto ci = cancelled_.begin(); ci != cancelled_.end(); ++ci) {
      if (ci->get() != c) continue;
      owned = std::move(*ci);
      cancelled_.erase(ci);
      break;
    }
    if (owned) tear_down(name, std::move(owned->pool));
    return maybe_stopped();
  }
  Status st = owned->prepared;
  if (st.ok()) st = owned->pool->start();
  if (!st.ok()) {
    std::string msg = "the pool cannot start: " + st.error().message();
    LOG_ERROR("pool %s: %s", name.c_str(), msg.c_str());
    tear_down(name, std::move(owned->pool));
    return answer(owned.get(), st, msg);
  }
  pools_.emplace(name, std::move(owned->pool));
  answer(owned.get(), {}, "");
}

void PoolManager::answer(Creation* c, Status status, const std::string& message) {
  if (!c->done) return;
  auto done = std::move(c->done);
  c->done = nullptr;
  done(std::move(status), message);
}

Status PoolManager::create_now(const PoolSettings& settings, std::string* message) {
  SP_TRY(check_new(settings, message));
  SP_TRY_ASSIGN(std::unique_ptr<Pool> pool, make_pool(settings, message));
  Status st = pool->prepare();
  if (st.ok()) st = pool->start();
  if (!st.ok()) {
    *message = "the pool cannot start: " + st.error().message();
    tear_down(settings.name, std::move(pool));
    return st;
  }
  pools_.emplace(settings.name, std::move(pool));
  return {};
}

Pool* PoolManager::find(std::string_view name) {
  auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : it->second.get();
}

const PoolSettings* PoolManager::creating_settings(std::string_view name) const {
  auto it = creating_.find(name);
  return it == creating_.end() ? nullptr : &it->second->settings;
}

std::vector<const PoolSettings*> PoolManager::creating_list() const {
  std::vector<const PoolSettings*> out;
  for (const auto& [name, c] : creating_) out.push_back(&c->settings);
  return out;
}

bool PoolManager::name_tearing_down(std::string_view name) const {
  if (stopping_.count(name)) return true;
  for (const auto& c : cancelled_) {
    if (c->settings.name == name) return true;
  }
  return false;
}

void PoolManager::tear_down(const std::string& name, std::unique_ptr<Pool> pool) {
  Pool* raw = pool.get();
  stopping_.emplace(name, std::move(pool));
  // Never synchronous: the pool finishes its stop from the loop (an idle callback at the earliest).
  raw->stop([this, name, raw] { teardown_finished(name, raw); });
}

void PoolManager::teardown_finished(const std::string& name, Pool* pool) {
  auto range = stopping_.equal_range(name);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second.get() == pool) {
      stopping_.erase(it);
      break;
    }
  }
  auto c = creating_.find(name);
  if (c != creating_.end() && !c->second->preparing && !name_tearing_down(name)) begin_prepare(c->second.get());
  maybe_stopped();
}

bool PoolManager::remove(std::string_view name) {
  auto it = pools_.find(name);
  if (it != pools_.end()) {
    std::string key = it->first;
    std::unique_ptr<Pool> pool = std::move(it->second);
    pools_.erase(it);
    tear_down(key, std::move(pool));
    return true;
  }
  auto c = creating_.find(name);
  if (c == creating_.end()) return false;
  std::unique_ptr<Creation> owned = std::move(c->second);
  creating_.erase(c);
  const std::string key = owned->settings.name;
  Creation* raw = owned.get();
  if (raw->preparing) {
    cancelled_.push_back(std::move(owned));  // finish_prepare() tears it down
  } else {
    tear_down(key, std::move(raw->pool));  // never prepared: nothing blocking to wait for
  }
  Status why = shutting_down_ ? Status(Error{kPoolShutdown, "create pool"}) : Status(Error{kPoolDeleted, "create pool"});
  answer(raw, why, shutting_down_ ? "the server is shutting down"
                                  : "pool " + key + " was deleted while it was being created");
  return true;
}

void PoolManager::stop(std::function<void()> done) {
  shutting_down_ = true;
  on_stopped_ = std::move(done);
  std::vector<std::string> names;
  for (const auto& [name, c] : creating_) names.push_back(name);
  for (const auto& [name, p] : pools_) names.push_back(name);
  for (const std::string& n : names) remove(n);
  maybe_stopped();
}

void PoolManager::maybe_stopped() {
  if (!shutting_down_ || !on_stopped_ || !pools_.empty() || !creating_.empty() || !cancelled_.empty() ||
      !stopping_.empty())
    return;
  auto cb = std::move(on_stopped_);
  on_stopped_ = nullptr;
  timers_.close();
  offload_.close(std::move(cb));
}

void PoolManager::render_metrics(std::string& out) const {
  std::vector<const Pool*> all;
  for (const auto& [name, p] : pools_) all.push_back(p.get());
  Pool::render_metrics(out, all);
}

}  // namespace sp::pool
