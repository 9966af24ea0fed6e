// Offload: runs blocking pool work (importing an image, starting a template, joining a source's
// threads and reaping its sandboxes) on a thread of its own, and its continuation on the loop
// thread; not libuv's thread pool, which the loop must not use (DESIGN.md §1).
//
// Threading: run() and close() on the loop thread. `work` runs on a new thread per job (jobs are
// rare: pool creation and deletion), so a slow image import never delays another pool's teardown;
// `done` runs on the loop thread after `work` returned and its thread was joined, never
// synchronously from run(). Everything `work` wrote is visible to `done` (the join orders them).
#pragma once

#include <uv.h>

#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace sp::pool {

class Offload {
 public:
  explicit Offload(uv_loop_t* loop);
  Offload(const Offload&) = delete;
  Offload& operator=(const Offload&) = delete;
  ~Offload();  // close() first and let its callback run; jobs still running are joined here

  void run(std::function<void()> work, std::function<void()> done);
  size_t running() const { return jobs_.size(); }
  // Closes the wake-up handle once no job is running (their `done` ran); `closed` runs after.
  void close(std::function<void()> closed);

 private:
  struct Job {
    std::function<void()> work, done;
    std::thread thread;
  };
  static void on_async(uv_async_t* a);
  void finish_jobs();
  void maybe_close();

  uv_loop_t* loop_;
  uv_async_t async_{};
  std::list<std::unique_ptr<Job>> jobs_;  // loop thread: every job not yet finished
  std::mutex mu_;
  std::vector<Job*> finished_;            // guarded by mu_: work returned, done not yet run
  std::function<void()> on_closed_;
  bool closing_ = false;
  bool closed_ = false;
};

}  // namespace sp::pool
