// ContainerSource: spawned sandboxes → startup probe → ready set → sessions; death and liveness
// watching; upstream connections inside a sandbox's network namespace (see container_source.h).
#include "container/container_source.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include "container/log_lines.h"
#include "container/spawner.h"
#include "util/log.h"

namespace sp::container {

struct ContainerSource::Box {
  enum class State { kStarting, kReady, kAllocated, kEnded };
  ContainerSource* owner = nullptr;
  State state = State::kStarting;
  Spawned sb;
  UniqueFd status_fd;        // init's status pipe, watched by status_poll
  UniqueFd output_fd;        // the container's stdout+stderr pipe (sb.output) when captured and
                             // watched by output_poll (a handle to close)
  uv_poll_t status_poll{};
  uv_poll_t output_poll{};   // sb.output (the container's stdout+stderr), when captured
  bool output_paused = false;  // over its log rate: not read for a while (ContainerSource::log_paused_)
  std::unique_ptr<LogLines> output_lines;
  uv_timer_t timer{};        // next probe, or the running probe's timeout
  int handles_open = 0;
  Probe* probe = nullptr;
  uint32_t successes = 0, failures = 0;
  uint64_t startup_deadline_ms = 0;  // uv_now() scale
  uint32_t retry_ms = 10;            // startup probe retry interval (doubles up to the period)
  uint64_t ready_ns = 0;             // CLOCK_MONOTONIC when the startup probe passed
  std::string status_text;
  std::list<Box*>::iterator where, ready_where;
};

struct ContainerSource::Probe {
  ContainerSource* owner = nullptr;
  Box* box = nullptr;  // null once abandoned
  uv_poll_t poll{};
  UniqueFd fd;
  bool http = false, connected = false;
  std::string request, response;
};

namespace {

std::string http_request(const pool::ProbeSettings& ps, uint16_t port) {
  std::string path = ps.path.empty() || ps.path[0] != '/' ? "/" + ps.path : ps.path;
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
         "\r\nUser-Agent: sandpool-probe/1\r\nAccept: */*\r\nConnection: close\r\n\r\n";
}

// "HTTP/1.x NNN ..." → NNN, or -1.
int status_code(const std::string& head) {
  if (head.compare(0, 7, "HTTP/1.") != 0 || head.size() < 12 || head[8] != ' ') return -1;
  int code = 0;
  for (int i = 9; i < 12; ++i) {
    if (head[i] < '0' || head[i] > '9') return -1;
    code = code * 10 + (head[i] - '0');
  }
  return code;
}

}  // namespace

ContainerSource::ContainerSource(uv_loop_t* loop, const pool::PoolSettings& settings, ContainerSourceOptions options)
    : loop_(loop), settings_(settings), options_(std::move(options)) {
  // Made here, on the loop thread, before prepare() starts the spawner thread that sends to it.
  int rc = uv_async_init(loop_, &async_, [](uv_async_t* a) { static_cast<ContainerSource*>(a->data)->take_spawned(); });
  if (rc != 0) {
    async_status_ = Error{-rc, "uv_async_init"};
    return;
  }
  async_.data = this;
  async_open_ = true;
  uv_unref(reinterpret_cast<uv_handle_t*>(&async_));
}

ContainerSource::~ContainerSource() {
  // stop() normally did this; without it the spawner's destructor still kills and reaps all.
  spawner_.reset();
}

void ContainerSource::on_wake(void* self) {
  // Spawner thread: only the async send, which libuv allows from any thread.
  uv_async_send(&static_cast<ContainerSource*>(self)->async_);
}

namespace {
// Imports and run-directory reclaims of concurrent pool creations take turns: two pools of one
// image must not unpack the same digest at once, and reclaim_run_dirs must not race itself.
std::mutex& prepare_mutex() {
  static std::mutex mu;
  return mu;
}
}  // namespace

Status ContainerSource::prepare() {
  SP_TRY(async_status_);
  std::lock_guard<std::mutex> serial(prepare_mutex());
  if (geteuid() != 0) {
    last_error_ = "custom containers need root (id-mapped mounts, uid ranges)";
    return Error{EPERM, "custom containers need root"};
  }
  const std::string& store = options_.image_store_dir;
  // ',' and ':' would split overlayfs options; whitespace and '\' are escaped in mountinfo, where
  // the layer clean-up looks for its mounts.
  if (store.empty() || store.find_first_of(",: \t\n\\") != std::string::npos) {
    last_error_ = "image_store_dir must be set and must not contain ',', ':', whitespace or '\\'";
    return Error{kEInvalid, "image store dir (empty, or ',' ':' whitespace '\\' in its path)"};
  }
  // The sandboxes' unprivileged host ids must pass through every directory above the store.
  for (size_t slash = store.find('/', 1); slash != std::string::npos; slash = store.find('/', slash + 1)) {
    std::string dir = store.substr(0, slash);
    struct stat st {};
    if (stat(dir.c_str(), &st) == 0 && (st.st_mode & S_IXOTH) == 0) {
      last_error_ = "image store: " + dir + " is not searchable by other users (the sandboxes' ids): chmod o+x " + dir;
      LOG_ERROR("pool %s: %s", settings_.name.c_str(), last_error_.c_str());
      return Error{EACCES, "image store not searchable by the sandboxes"};
    }
  }
  if (settings_.container.image.empty()) {
    last_error_ = "the pool has no container image";
    return Error{kEInvalid, "no container image"};
  }
  // 1. the image, unpacked once per digest (blocking).
  uint64_t t0 = monotonic_ns();
  auto img = image::import_image(settings_.container.image, store, options_.import_limits);
  if (!img.ok()) {
    last_error_ = "image " + settings_.container.image + ": " + img.error().message();
    LOG_ERROR("pool %s: %s", settings_.name.c_str(), last_error_.c_str());
    // A path that names no image, or an image that is not a valid one, is the client's mistake (400
    // InvalidPoolSettings); the store's own failures (disk full, I/O) stay the server's (500).
    int code = img.error().code;
    if (code == ENOENT || code == ENOTDIR || code == ELOOP || code == ENAMETOOLONG) {
      return Error{kEInvalid, "image: no image at that path"};
    }
    if (code == kEInvalid || code == kETooLarge || code == kENotFound) return Error{kEInvalid, img.error().where};
    return img.error();
  }
  image_ = std::move(img).value();
  // The sandboxes' host ids must reach the rootfs and the layers being assembled.
  chmod(store.c_str(), 0711);
  LOG_INFO("pool %s: image %s %s in %.0f ms", settings_.name.c_str(), image_.digest.c_str(),
           image_.reused ? "reused" : "imported", (monotonic_ns() - t0) / 1e6);
  // 2. what it runs.
  auto launch = resolve_launch(image_, settings_.container);
  if (!launch.ok()) {
    last_error_ = "image " + settings_.container.image + ": " + launch.error().message();
    LOG_ERROR("pool %s: %s", settings_.name.c_str(), last_error_.c_str());
    return launch.error();
  }
  launch_ = std::move(launch).value();
  // 3. the threads.
  SpawnConfig cfg;
  cfg.pool = settings_.name;
  cfg.image_rootfs = image_.rootfs;
  cfg.run_dir = store + "/run";
  cfg.init_path = options_.init_path;
  cfg.launch = launch_;
  cfg.limits.memory_bytes = settings_.memory_bytes;
  cfg.limits.pids_max = 1024;
  cfg.limits.cpu_millis = static_cast<uint32_t>(settings_.cpu * 1000);
  cfg.data_bytes = settings_.data_size_bytes;
  cfg.capture_output = options_.log_lines_per_second > 0;
  auto sp = ContainerSpawner::start(std::move(cfg), on_wake, this);
  if (!sp.ok()) {
    last_error_ = "container spawner: " + sp.error().message();
    return sp.error();
  }
  spawner_ = std::move(sp).value();
  return {};
}

Status ContainerSource::start(std::function<void()> on_ready) {
  on_ready_ = std::move(on_ready);
  startup_ = pool::effective_startup_probe(settings_);
  // The loop thread's network namespace: connect_in() returns to it after each socket it makes.
  host_netns_.reset(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!host_netns_) return errno_error("open host netns");
  uv_timer_init(loop_, &log_timer_);
  log_timer_.data = this;
  log_timer_open_ = true;
  uv_unref(reinterpret_cast<uv_handle_t*>(&log_timer_));
  uv_timer_init(loop_, &backoff_timer_);
  backoff_timer_.data = this;
  backoff_open_ = true;
  uv_unref(reinterpret_cast<uv_handle_t*>(&backoff_timer_));
  started_ = true;
  take_spawned();  // also refills
  return {};
}

void ContainerSource::set_wanted(size_t ready_wanted) {
  wanted_ = ready_wanted;
  refill();
}

void ContainerSource::refill() {
  if (stopping_ || !started_ || !spawner_ || in_backoff_) return;
  size_t have = ready_.size() + starting_ + outstanding_;
  if (have >= wanted_) return;
  size_t n = wanted_ - have;
  outstanding_ += n;
  spawner_->request(static_cast<uint32_t>(n));
}

void ContainerSource::note_failure(const std::string& why) {
  last_error_ = why;
  LOG_WARN("pool %s: %s", settings_.name.c_str(), why.c_str());
}

void ContainerSource::take_spawned() {
  if (!started_ || !spawner_) return;  // before start(), prepare() may still be writing spawner_
  for (Spawned& s : spawner_->take()) {
    if (outstanding_ > 0) --outstanding_;
    adopt(std::move(s));
  }
  refill();
}

// A broken image must not spin the CPU: every failed attempt doubles the delay before the next
// request (100 ms … max_backoff_ms); a sandbox that becomes Ready resets it.
void ContainerSource::adopt(Spawned&& s) {
  auto backoff = [this] {
    ++failures_;
    ++consecutive_failures_;
    uint64_t delay = std::min<uint64_t>(100ull << std::min<uint32_t>(consecutive_failures_ - 1, 20), options_.max_backoff_ms);
    in_backoff_ = true;
    uv_timer_start(&backoff_timer_, [](uv_timer_t* t) {
      auto* self = static_cast<ContainerSource*>(t->data);
      self->in_backoff_ = false;
      self->refill();
    }, delay, 0);
  };
  if (stopping_) {
    if (s.ok()) spawner_->give_back(std::move(s));
    return;
  }
  if (!s.ok()) {
    log_failed_spawn_output(s);
    note_failure("spawn failed: " + s.error);
    backoff();
    return;
  }
  auto* b = new Box{};
  b->owner = this;
  b->sb = std::move(s);
  b->status_fd = std::move(b->sb.proc.status_fd);
  b->status_poll.data = b;
  b->timer.data = b;
  if (uv_poll_init(loop_, &b->status_poll, b->status_fd.get()) != 0) {
    note_failure("uv_poll_init on a sandbox status pipe failed");
    spawner_->give_back(std::move(b->sb));
    delete b;
    backoff();
    return;
  }
  uv_timer_init(loop_, &b->timer);
  b->handles_open = 2;
  watch_output(b);
  boxes_.push_front(b);
  b->where = boxes_.begin();
  ++starting_;
  uv_poll_start(&b->status_poll, UV_READABLE | UV_DISCONNECT, [](uv_poll_t* p, int, int) {
    auto* box = static_cast<Box*>(p->data);
    box->owner->on_status(box);
  });
  b->startup_deadline_ms = uv_now(loop_) + (startup_.initial_delay_seconds +
                                            static_cast<uint64_t>(startup_.failure_threshold) * startup_.period_seconds) * 1000;
  schedule_probe(b, startup_.initial_delay_seconds * 1000ull);
  // Failures are charged to backoff() through fail_starting; count nothing here.
  (void)backoff;
}

void ContainerSource::schedule_probe(Box* b, uint64_t delay_ms) {
  uv_timer_start(&b->timer, [](uv_timer_t* t) {
    auto* box = static_cast<Box*>(t->data);
    ContainerSource* self = box->owner;
    if (box->probe) {
      self->abandon_probe(box);
      self->probe_done(box, false, "timed out");
    } else {
      self->start_probe(box);
    }
  }, delay_ms, 0);
}

Result<UniqueFd> ContainerSource::connect_in(const Box* b, uint16_t port) {
  // The socket is created in the sandbox's network namespace (a socket keeps the namespace it was
  // made in); the thread goes straight back. connect() then reaches the sandbox's loopback.
  if (setns(b->sb.netns.get(), CLONE_NEWNET) != 0) return errno_error("setns sandbox netns");
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = errno;
  if (setns(host_netns_.get(), CLONE_NEWNET) != 0) {
    // The loop thread would keep talking from inside a sandbox: never continue like that.
    LOG_ERROR("setns back to the host network namespace failed: %s", strerror(errno));
    abort();
  }
  if (fd < 0) return Error{err, "socket in sandbox"};
  UniqueFd out(fd);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS)
    return errno_error("connect in sandbox");
  return out;
}

Result<UniqueFd> ContainerSource::open_upstream(const pool::Sandbox& sandbox) {
  auto* b = static_cast<Box*>(sandbox.opaque);
  if (!b || b->sb.id != sandbox.id || (b->state != Box::State::kAllocated && b->state != Box::State::kReady))
    return Error{ESRCH, "container sandbox is gone"};
  return connect_in(b, launch_.port);
}

void ContainerSource::start_probe(Box* b) {
  const pool::ProbeSettings& ps = b->state == Box::State::kStarting ? startup_ : *settings_.container.liveness;
  uint16_t port = ps.port ? ps.port : launch_.port;
  auto fd = connect_in(b, port);
  if (!fd.ok()) return probe_done(b, false, fd.error().message());
  auto* p = new Probe{};
  p->owner = this;
  p->box = b;
  p->fd = std::move(fd).value();
  p->http = ps.kind == pool::ProbeSettings::Kind::kHttp;
  if (p->http) p->request = http_request(ps, port);
  p->poll.data = p;
  if (uv_poll_init(loop_, &p->poll, p->fd.get()) != 0) {
    delete p;
    return probe_done(b, false, "uv_poll_init");
  }
  b->probe = p;
  uv_timer_start(&b->timer, [](uv_timer_t* t) {
    auto* box = static_cast<Box*>(t->data);
    box->owner->abandon_probe(box);
    box->owner->probe_done(box, false, "timed out");
  }, std::max<uint64_t>(ps.timeout_seconds, 1) * 1000, 0);
  uv_poll_start(&p->poll, UV_WRITABLE, [](uv_poll_t* h, int status, int events) {
    auto* pr = static_cast<Probe*>(h->data);
    Box* box = pr->box;
    ContainerSource* self = box->owner;
    auto finish = [&](bool ok, const std::string& detail) {
      uv_timer_stop(&box->timer);
      self->abandon_probe(box);
      self->probe_done(box, ok, detail);
    };
    if (!pr->connected) {
      // libuv reports POLLERR (a refused connect) as UV_EBADF: SO_ERROR has the real reason.
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(pr->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return finish(false, std::string("connect: ") + strerror(err));
      if (status < 0) return finish(false, uv_strerror(status));
      pr->connected = true;
      if (!pr->http) return finish(true, "");
      ssize_t n = send(pr->fd.get(), pr->request.data(), pr->request.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n != static_cast<ssize_t>(pr->request.size())) return finish(false, "send of the probe request failed");
      uv_poll_start(h, UV_READABLE | UV_DISCONNECT, h->poll_cb);
      return;
    }
    (void)events;
    char buf[1024];
    ssize_t n = recv(pr->fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) return finish(false, "connection closed before a status line");
    pr->response.append(buf, static_cast<size_t>(n));
    if (pr->response.find("\r\n") == std::string::npos && pr->response.size() < 512) return;
    int code = status_code(pr->response);
    if (code < 0) return finish(false, "not an HTTP response");
    finish(code >= 200 && code < 400, "HTTP status " + std::to_string(code));
  });
}

void ContainerSource::abandon_probe(Box* b) {
  Probe* p = b->probe;
  if (!p) return;
  b->probe = nullptr;
  p->box = nullptr;
  uv_poll_stop(&p->poll);
  ++closing_;
  uv_close(reinterpret_cast<uv_handle_t*>(&p->poll), [](uv_handle_t* h) {
    auto* pr = static_cast<Probe*>(h->data);
    ContainerSource* self = pr->owner;
    delete pr;
    self->closed_one();
  });
}

void ContainerSource::probe_done(Box* b, bool ok, const std::string& detail) {
  if (stopping_) return;
  switch (b->state) {
    case Box::State::kStarting: {
      LOG_DEBUG("pool %s: container %llu startup probe %s %s", settings_.name.c_str(),
                static_cast<unsigned long long>(b->sb.id), ok ? "passed" : "failed", detail.c_str());
      const uint64_t period_ms = std::max<uint64_t>(startup_.period_seconds, 1) * 1000;
      if (ok) {
        if (++b->successes >= std::max<uint32_t>(startup_.success_threshold, 1)) return become_ready(b);
        return schedule_probe(b, period_ms);
      }
      b->successes = 0;
      if (uv_now(loop_) >= b->startup_deadline_ms)
        return fail_starting(b, "startup probe failed on port " +
                                    std::to_string(startup_.port ? startup_.port : launch_.port) + ": " + detail);
      // Retried quickly (a server is usually up within milliseconds; a refused loopback connect
      // costs ~30 µs): 10 ms doubling to 100 ms, never slower than the period. The budget
      // (initialDelay + failureThreshold × period) is a deadline.
      uint64_t delay = b->retry_ms;
      b->retry_ms = static_cast<uint32_t>(std::min<uint64_t>({b->retry_ms * 2ull, 100, period_ms}));
      return schedule_probe(b, delay);
    }
    case Box::State::kReady:
    case Box::State::kAllocated: {
      const pool::ProbeSettings& ps = *settings_.container.liveness;
      const uint64_t period_ms = std::max<uint64_t>(ps.period_seconds, 1) * 1000;
      if (ok) {
        b->failures = 0;
        return schedule_probe(b, period_ms);
      }
      if (++b->failures < std::max<uint32_t>(ps.failure_threshold, 1)) return schedule_probe(b, period_ms);
      std::string why = "liveness probe failed: " + detail;
      if (b->state == Box::State::kAllocated) return end_allocated(b, why);
      note_failure("a ready container was replaced: " + why);
      discard(b);
      return refill();
    }
    case Box::State::kEnded:
      return;
  }
}

void ContainerSource::become_ready(Box* b) {
  --starting_;
  b->state = Box::State::kReady;
  ++spawned_;
  consecutive_failures_ = 0;
  b->ready_ns = monotonic_ns();
  last_spawn_to_ready_ns_ = b->ready_ns - b->sb.started_ns;
  b->successes = b->failures = 0;
  ready_.push_back(b);
  b->ready_where = std::prev(ready_.end());
  if (settings_.container.liveness) {
    // Kubernetes: liveness starts once the startup probe passed, its initialDelay counted from
    // the container's start.
    const pool::ProbeSettings& ps = *settings_.container.liveness;
    const uint64_t since_start_ms = (b->ready_ns - b->sb.started_ns) / 1000000;
    const uint64_t delay_ms = ps.initial_delay_seconds * 1000ull;
    schedule_probe(b, std::max<uint64_t>(std::max<uint64_t>(ps.period_seconds, 1) * 1000,
                                         delay_ms > since_start_ms ? delay_ms - since_start_ms : 0));
  }
  if (on_ready_) on_ready_();
}

void ContainerSource::fail_starting(Box* b, const std::string& why) {
  note_failure(why);
  ++failures_;
  ++consecutive_failures_;
  discard(b);
  uint64_t delay = std::min<uint64_t>(100ull << std::min<uint32_t>(consecutive_failures_ - 1, 20), options_.max_backoff_ms);
  in_backoff_ = true;
  uv_timer_start(&backoff_timer_, [](uv_timer_t* t) {
    auto* self = static_cast<ContainerSource*>(t->data);
    self->in_backoff_ = false;
    self->refill();
  }, delay, 0);
}

std::string ContainerSource::death_reason(Box* b) {
  // One read of the cgroup's OOM count, on the loop thread, once per container death (rare).
  return describe_exit(b->status_text, b->sb.cgroup.valid() && b->sb.cgroup.oom_kills() > 0);
}

void ContainerSource::on_status(Box* b) {
  // init writes one line ("exit N" / "signal N") and exits; EOF alone means it was killed.
  bool eof = false;
  for (;;) {
    char buf[64];
    ssize_t n = read(b->status_fd.get(), buf, sizeof buf);
    if (n > 0) {
      if (b->status_text.size() < 64) b->status_text.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    eof = n == 0 || errno != EAGAIN;
    break;
  }
  if (!eof && b->status_text.find('\n') == std::string::npos) return;
  uv_poll_stop(&b->status_poll);
  if (b->output_fd) read_output(b, true);  // its last words come before the news of its end
  std::string why = death_reason(b);
  switch (b->state) {
    case Box::State::kStarting:
      return fail_starting(b, why + " before its startup probe passed");
    case Box::State::kReady:
      note_failure("a ready container ended (" + why + "); replacing it");
      discard(b);
      return refill();
    case Box::State::kAllocated:
      return end_allocated(b, why);
    case Box::State::kEnded:
      return;
  }
}

void ContainerSource::end_allocated(Box* b, const std::string& why) {
  b->state = Box::State::kEnded;
  abandon_probe(b);
  uv_timer_stop(&b->timer);
  uv_poll_stop(&b->status_poll);
  LOG_INFO("pool %s: container %llu ended: %s", settings_.name.c_str(), static_cast<unsigned long long>(b->sb.id),
           why.c_str());
  // May release() the sandbox synchronously: `b` is not touched afterwards.
  if (on_end_) on_end_(b->sb.id, why);
}

void ContainerSource::discard(Box* b) {
  if (b->state == Box::State::kStarting) --starting_;
  if (b->state == Box::State::kReady) ready_.erase(b->ready_where);
  b->state = Box::State::kEnded;
  boxes_.erase(b->where);
  abandon_probe(b);
  uv_timer_stop(&b->timer);
  uv_poll_stop(&b->status_poll);
  if (b->output_fd) {
    read_output(b, true);
    uv_poll_stop(&b->output_poll);
    if (b->output_paused) log_paused_.erase(std::find(log_paused_.begin(), log_paused_.end(), b));
    b->output_paused = false;
  }
  if (spawner_) spawner_->give_back(std::move(b->sb));
  auto close = [this, b](uv_handle_t* h) {
    ++closing_;
    h->data = b;
    uv_close(h, [](uv_handle_t* hh) {
      auto* box = static_cast<Box*>(hh->data);
      ContainerSource* self = box->owner;
      if (--box->handles_open == 0) delete box;
      self->closed_one();
    });
  };
  close(reinterpret_cast<uv_handle_t*>(&b->status_poll));
  close(reinterpret_cast<uv_handle_t*>(&b->timer));
  if (b->output_fd) close(reinterpret_cast<uv_handle_t*>(&b->output_poll));
}

// ---- the containers' output → our log (log_lines.h) ----

namespace {
// Reads what `fd` has now into `lines` (at most `reads` reads of 16 KiB); true at EOF or an error.
bool read_lines(int fd, LogLines& lines, uint64_t now_ms, int reads, const LogLines::Emit& emit) {
  char buf[16384];
  for (int i = 0; i < reads; ++i) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      lines.feed(std::string_view(buf, static_cast<size_t>(n)), now_ms, emit);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n == 0 || errno != EAGAIN;
  }
  return false;
}
}  // namespace

void ContainerSource::watch_output(Box* b) {
  b->output_fd = std::move(b->sb.output);
  if (!b->output_fd) return;
  b->output_lines = std::make_unique<LogLines>(options_.log_lines_per_second, uv_now(loop_));
  b->output_poll.data = b;
  if (uv_poll_init(loop_, &b->output_poll, b->output_fd.get()) != 0) {
    LOG_WARN("pool %s: container %llu: its output cannot be watched; it goes unread", settings_.name.c_str(),
             static_cast<unsigned long long>(b->sb.id));
    b->output_fd.reset();  // no reader: the container's writes now fail (EPIPE, or SIGPIPE) instead of blocking
    return;
  }
  ++b->handles_open;
  uv_poll_start(&b->output_poll, UV_READABLE, on_output);
}

void ContainerSource::on_output(uv_poll_t* p, int, int) {
  auto* box = static_cast<Box*>(p->data);
  ContainerSource* self = box->owner;
  if (self->read_output(box, false)) {
    uv_poll_stop(&box->output_poll);  // EOF (or an error): every writer in the container is gone
  } else if (box->output_lines->over_rate()) {
    self->pause_output(box);
  }
}

// Where container `id`'s lines go: the server's log, tagged with the pool and the container.
LogLines::Emit ContainerSource::log_emitter(uint64_t id) const {
  return [this, id](std::string_view line) {
    LOG_INFO("pool %s: container %llu: %.*s", settings_.name.c_str(), static_cast<unsigned long long>(id),
             static_cast<int>(line.size()), line.data());
  };
}

// One read (drain: up to 16, and the last partial line) of a box's output into the log.
bool ContainerSource::read_output(Box* b, bool drain) {
  LogLines& ll = *b->output_lines;
  const uint64_t lines0 = ll.lines(), dropped0 = ll.dropped();
  const LogLines::Emit emit = log_emitter(b->sb.id);
  bool eof = read_lines(b->output_fd.get(), ll, uv_now(loop_), drain ? 16 : 1, emit);
  if (eof || drain) ll.finish(emit);
  log_lines_ += ll.lines() - lines0;
  log_dropped_ += ll.dropped() - dropped0;
  return eof;
}

// Over its rate, a container's output is not read for 250 ms: its pipe fills and its writes wait,
// instead of this thread reading (and dropping) as fast as it can write.
void ContainerSource::pause_output(Box* b) {
  uv_poll_stop(&b->output_poll);
  b->output_paused = true;
  log_paused_.push_back(b);
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&log_timer_))) return;
  uv_timer_start(&log_timer_, [](uv_timer_t* t) {
    auto* self = static_cast<ContainerSource*>(t->data);
    std::vector<Box*> paused = std::move(self->log_paused_);
    self->log_paused_.clear();
    for (Box* box : paused) {
      box->output_paused = false;
      uv_poll_start(&box->output_poll, UV_READABLE, on_output);
    }
  }, 250, 0);
}

void ContainerSource::log_failed_spawn_output(Spawned& s) {
  if (!s.output) return;
  // The container is gone (or never ran): what it or init said before is all in the pipe.
  LogLines ll(options_.log_lines_per_second, uv_now(loop_));
  const LogLines::Emit emit = log_emitter(s.id);
  read_lines(s.output.get(), ll, uv_now(loop_), 16, emit);
  ll.finish(emit);
  log_lines_ += ll.lines();
  log_dropped_ += ll.dropped();
  s.output.reset();
}

void ContainerSource::closed_one() {
  if (--closing_ > 0 || !stopping_ || teardown_pending_ || !on_stopped_) return;
  auto done = std::move(on_stopped_);
  on_stopped_ = nullptr;
  done();  // may destroy this
}

std::optional<pool::Sandbox> ContainerSource::pop() {
  while (!ready_.empty()) {
    Box* b = ready_.front();
    // Death is normally seen by the status poll first; this catches one that died since.
    pollfd p{b->sb.proc.pidfd.get(), POLLIN, 0};
    if (poll(&p, 1, 0) != 0) {
      note_failure("a ready container had died; replacing it");
      discard(b);
      continue;
    }
    ready_.pop_front();
    b->state = Box::State::kAllocated;
    pool::Sandbox sb;
    sb.id = b->sb.id;
    sb.pid = b->sb.proc.pid;
    sb.ready_ns = b->ready_ns;
    sb.opaque = b;
    refill();
    return sb;
  }
  refill();
  return std::nullopt;
}

void ContainerSource::release(pool::Sandbox&& sandbox) {
  auto* b = static_cast<Box*>(sandbox.opaque);
  sandbox.opaque = nullptr;
  if (!b || b->sb.id != sandbox.id) return;
  discard(b);
}

void ContainerSource::stop(pool::Offload& offload, std::function<void()> on_stopped) {
  stopping_ = true;
  on_stopped_ = std::move(on_stopped);
  while (!boxes_.empty()) discard(boxes_.front());
  auto close_handles = [this] {
    auto close = [this](uv_handle_t* h) {
      ++closing_;
      h->data = this;
      uv_close(h, [](uv_handle_t* hh) { static_cast<ContainerSource*>(hh->data)->closed_one(); });
    };
    if (backoff_open_) {
      backoff_open_ = false;
      close(reinterpret_cast<uv_handle_t*>(&backoff_timer_));
    }
    if (log_timer_open_) {
      log_timer_open_ = false;
      close(reinterpret_cast<uv_handle_t*>(&log_timer_));
    }
    if (async_open_) {
      async_open_ = false;
      close(reinterpret_cast<uv_handle_t*>(&async_));
    }
    if (closing_ == 0 && on_stopped_) {
      auto done = std::move(on_stopped_);
      on_stopped_ = nullptr;
      done();
    }
  };
  if (!spawner_) return close_handles();
  // Joining the spawner thread (PDEATHSIG takes any sandbox still alive) and reaping everything
  // blocks: on the offload thread. The async handle stays open meanwhile (the spawner thread may
  // still send to it); the loop keeps closing the boxes' handles.
  teardown_pending_ = true;
  auto spawner = std::make_shared<std::unique_ptr<ContainerSpawner>>(std::move(spawner_));
  offload.run([spawner] { spawner->reset(); }, [this, close_handles] {
    teardown_pending_ = false;
    close_handles();
  });
}

pool::SourceStats ContainerSource::stats() const {
  pool::SourceStats st;
  st.spawned = spawned_;
  st.spawn_failures = failures_;
  st.pending = starting_ + outstanding_;
  st.reaped = spawner_ ? spawner_->reaped() : 0;
  st.log_lines = log_lines_;
  st.log_dropped = log_dropped_;
  st.last_error = last_error_;
  return st;
}

}  // namespace sp::container
