// Offload: a thread per blocking job, completions delivered to the loop by one uv_async_t.
#include "pool/offload.h"

#include <cstdlib>

namespace sp::pool {

Offload::Offload(uv_loop_t* loop) : loop_(loop) {
  // uv_async_init fails only without an eventfd; then every completion would be lost: fail loudly.
  if (uv_async_init(loop_, &async_, on_async) != 0) abort();
  async_.data = this;
  // Only running jobs keep the loop alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
}

Offload::~Offload() {
  for (auto& j : jobs_) {
    if (j->thread.joinable()) j->thread.join();
  }
}

void Offload::run(std::function<void()> work, std::function<void()> done) {
  auto job = std::make_unique<Job>();
  job->work = std::move(work);
  job->done = std::move(done);
  Job* raw = job.get();
  if (jobs_.empty()) uv_ref(reinterpret_cast<uv_handle_t*>(&async_));
  jobs_.push_back(std::move(job));
  // The thread may finish before `thread` is assigned; on_async cannot run until run() returns
  // (both on the loop thread), so the join there always sees the assignment.
  raw->thread = std::thread([this, raw] {
    raw->work();
    {
      std::lock_guard<std::mutex> g(mu_);
      finished_.push_back(raw);
    }
    uv_async_send(&async_);
  });
}

void Offload::on_async(uv_async_t* a) { static_cast<Offload*>(a->data)->finish_jobs(); }

void Offload::finish_jobs() {
  std::vector<Job*> done;
  {
    std::lock_guard<std::mutex> g(mu_);
    done.swap(finished_);
  }
  for (Job* j : done) {
    j->thread.join();  // its work has returned: only the thread's exit is left
    auto fn = std::move(j->done);
    for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
      if (it->get() == j) {
        jobs_.erase(it);
        break;
      }
    }
    if (fn) fn();  // may run() more jobs
  }
  if (jobs_.empty() && !closed_) uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
  maybe_close();
}

void Offload::close(std::function<void()> closed) {
  closing_ = true;
  on_closed_ = std::move(closed);
  maybe_close();
}

void Offload::maybe_close() {
  if (!closing_ || closed_ || !jobs_.empty()) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), [](uv_handle_t* h) {
    auto* self = static_cast<Offload*>(h->data);
    auto cb = std::move(self->on_closed_);
    self->on_closed_ = nullptr;
    if (cb) cb();  // may destroy this
  });
}

}  // namespace sp::pool
