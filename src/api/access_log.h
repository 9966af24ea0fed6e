// AccessLog: one JSON line per answered request, buffered and written on a timer; off by default.
// Loop thread only. Not the leveled diagnostic log (util/log.h).
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "http/parser.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::api {

class AccessLog {
 public:
  // `path` "-" means standard output. The flush timer is unref'd: it never keeps the loop alive.
  Status open(uv_loop_t* loop, const std::string& path);
  void write(const http::Request& request, std::string_view route, int status, uint64_t latency_ns,
             size_t body_bytes);
  void flush();
  // Flushes and closes the timer; call before the loop ends.
  void close();

 private:
  static void on_timer(uv_timer_t* t);
  UniqueFd fd_;
  int raw_fd_ = -1;
  std::string buf_;
  uv_timer_t timer_{};
  bool timer_open_ = false;
};

}  // namespace sp::api
