// Access log lines: {"time":"...","peer":"...","method":"GET","target":"/healthz","route":"GET /healthz",
// "status":200,"bytes":15,"duration_us":42}
#include "api/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>

#include "api/json.h"

namespace sp::api {

Status AccessLog::open(uv_loop_t* loop, const std::string& path) {
  if (path == "-") {
    raw_fd_ = STDOUT_FILENO;
  } else {
    fd_.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    if (!fd_) return errno_error("open access log");
    raw_fd_ = fd_.get();
  }
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  timer_open_ = true;
  uv_timer_start(&timer_, on_timer, 250, 250);
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
  return {};
}

void AccessLog::write(const http::Request& request, std::string_view route, int status, uint64_t latency_ns,
                      size_t body_bytes) {
  if (raw_fd_ < 0) return;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char when[64];
  std::snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000);
  JsonWriter w(buf_);
  w.begin_object();
  w.key("time").string(when);
  w.key("peer").string(request.peer);
  w.key("method").string(request.method_name);
  w.key("target").string(request.target);
  w.key("route").string(route);
  w.key("status").number(static_cast<int64_t>(status));
  w.key("bytes").number_u(body_bytes);
  w.key("duration_us").number_u(latency_ns / 1000);
  w.end_object();
  buf_ += '\n';
  if (buf_.size() > 64 * 1024) flush();
}

void AccessLog::flush() {
  size_t done = 0;
  while (done < buf_.size()) {
    ssize_t n = ::write(raw_fd_, buf_.data() + done, buf_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // a full disk loses log lines, never requests
    done += static_cast<size_t>(n);
  }
  buf_.clear();
}

void AccessLog::on_timer(uv_timer_t* t) { static_cast<AccessLog*>(t->data)->flush(); }

void AccessLog::close() {
  if (raw_fd_ >= 0) flush();
  if (timer_open_) {
    timer_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  }
}

}  // namespace sp::api
