// PoolManager: creation, removal, shutdown and metrics of all pools.
#include "pool/pool_manager.h"

#include "util/log.h"

namespace sp::pool {

PoolManager::PoolManager(uv_loop_t* loop, SourceFactory factory)
    : loop_(loop), factory_(std::move(factory)), timers_(loop) {}

Status PoolManager::create(const PoolSettings& settings, std::string* message) {
  if (!valid_pool_name(settings.name)) {
    *message = "pool names are 1-63 characters of a-z, 0-9 and '-'";
    return Error{kEInvalid, "create pool"};
  }
  if (pools_.size() >= kMaxPools) {
    *message = "at most " + std::to_string(kMaxPools) + " pools per server";
    return Error{kETooLarge, "create pool"};
  }
  if (pools_.count(settings.name)) {
    *message = "pool " + settings.name + " exists";
    return Error{EEXIST, "create pool"};
  }
  auto source = factory_(loop_, settings);
  if (!source.ok()) {
    *message = "the pool's sandboxes cannot start: " + source.error().message();
    return source.error();
  }
  auto pool = std::make_unique<Pool>(loop_, &timers_, settings, std::move(source).value());
  Status st = pool->start();
  if (!st.ok()) {
    *message = "the pool cannot start: " + st.error().message();
    Pool* raw = pool.get();
    stopping_.push_back(std::move(pool));
    raw->stop([this, raw] {
      for (auto it = stopping_.begin(); it != stopping_.end(); ++it) {
        if (it->get() == raw) {
          stopping_.erase(it);
          break;
        }
      }
    });
    return st;
  }
  pools_.emplace(settings.name, std::move(pool));
  return {};
}

Pool* PoolManager::find(std::string_view name) {
  auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : it->second.get();
}

bool PoolManager::remove(std::string_view name) {
  auto it = pools_.find(name);
  if (it == pools_.end()) return false;
  Pool* raw = it->second.get();
  stopping_.push_back(std::move(it->second));
  pools_.erase(it);
  ++stops_outstanding_;
  raw->stop([this, raw] {
    for (auto s = stopping_.begin(); s != stopping_.end(); ++s) {
      if (s->get() == raw) {
        stopping_.erase(s);
        break;
      }
    }
    --stops_outstanding_;
    if (stops_outstanding_ == 0 && on_stopped_) {
      timers_.close();
      auto cb = std::move(on_stopped_);
      on_stopped_ = nullptr;
      cb();
    }
  });
  return true;
}

void PoolManager::stop(std::function<void()> done) {
  on_stopped_ = std::move(done);
  std::vector<std::string> names;
  for (const auto& [name, p] : pools_) names.push_back(name);
  for (const std::string& n : names) remove(n);
  if (stops_outstanding_ == 0 && on_stopped_) {
    timers_.close();
    auto cb = std::move(on_stopped_);
    on_stopped_ = nullptr;
    cb();
  }
}

void PoolManager::render_metrics(std::string& out) const {
  std::vector<const Pool*> all;
  for (const auto& [name, p] : pools_) all.push_back(p.get());
  Pool::render_metrics(out, all);
}

}  // namespace sp::pool
