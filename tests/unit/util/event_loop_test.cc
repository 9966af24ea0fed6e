// Tests for run_loop: it ends like uv_run(UV_RUN_DEFAULT), handles I/O and timers, counts the
// events it found while busy-polling, and runs timers that fall due while it polls.
#include "util/event_loop.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>

namespace {

// A socketpair: the loop reads end 0; a thread writes `n` bytes to end 1, each once the loop has
// read the one before. The reader closes its handle after the last byte, which ends the loop.
struct PingLoop {
  uv_loop_t loop{};
  uv_poll_t poll{};
  int fds[2] = {-1, -1};
  int n = 0;
  std::atomic<int> read{0};

  explicit PingLoop(int count) : n(count) {
    REQUIRE(uv_loop_init(&loop) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    REQUIRE(uv_poll_init(&loop, &poll, fds[0]) == 0);
    poll.data = this;
    uv_poll_start(&poll, UV_READABLE, [](uv_poll_t* h, int, int) {
      auto* self = static_cast<PingLoop*>(h->data);
      char c;
      while (::read(self->fds[0], &c, 1) == 1) {
        if (++self->read == self->n) uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
      }
    });
  }
  ~PingLoop() {
    CHECK(uv_loop_close(&loop) == 0);
    close(fds[0]);
    close(fds[1]);
  }
  std::thread writer() {
    return std::thread([this] {
      for (int i = 0; i < n; ++i) {
        while (read.load() < i) std::this_thread::yield();
        REQUIRE(::write(fds[1], "x", 1) == 1);
      }
    });
  }
};

}  // namespace

TEST_CASE("run_loop: without busy polling, handles I/O and returns when no handle is left") {
  PingLoop p(20);
  std::thread w = p.writer();
  sp::BusyPollStats stats;
  sp::run_loop(&p.loop, 0, &stats);
  w.join();
  CHECK(p.read.load() == 20);
  CHECK(stats.hits == 0);
  CHECK(stats.spin_ns == 0);
}

TEST_CASE("run_loop: events that arrive while it polls are counted as hits") {
  PingLoop p(50);
  std::thread w = p.writer();
  sp::BusyPollStats stats;
  // A window of 2 s: the writer answers each read well within it, so after the first byte every
  // one is found by the poll, not by a wake-up (a stalled writer thread may cost a few).
  sp::run_loop(&p.loop, 2'000'000'000, &stats);
  w.join();
  CHECK(p.read.load() == 50);
  CHECK(stats.hits >= 40);
  CHECK(stats.hits <= 49);
}

TEST_CASE("run_loop: a timer that falls due while the loop polls runs on time") {
  uv_loop_t loop{};
  REQUIRE(uv_loop_init(&loop) == 0);
  // An async wake-up is I/O: the loop's first turn finds it and then polls for the 2 s window.
  uv_async_t async{};
  uv_async_init(&loop, &async, [](uv_async_t* a) { uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr); });
  uv_async_send(&async);
  uv_timer_t timer{};
  uv_timer_init(&loop, &timer);
  uint64_t fired_at = 0;
  timer.data = &fired_at;
  uint64_t start = uv_hrtime();
  uv_timer_start(&timer, [](uv_timer_t* t) {
    *static_cast<uint64_t*>(t->data) = uv_hrtime();
    uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
  }, 20, 0);
  sp::BusyPollStats stats;
  sp::run_loop(&loop, 2'000'000'000, &stats);
  REQUIRE(fired_at != 0);
  // Due at 20 ms: it must not wait for the 2 s window to end.
  CHECK((fired_at - start) / 1'000'000 < 1000);
  CHECK(stats.spin_ns > 0);  // the loop polled, finding nothing, until the timer was due
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("run_loop: a watcher started by a callback while the loop polls sees its events at once") {
  // The connection is accepted, and its read started, in the polling window that a first I/O
  // (the async) opened; its data must be read then, not when the 2 s window ends.
  struct State {
    uv_loop_t loop{};
    uv_pipe_t server{};
    uv_pipe_t conn{};
    uint64_t read_at = 0;
  } s;
  REQUIRE(uv_loop_init(&s.loop) == 0);
  std::string path = "/tmp/sp-event-loop-test-" + std::to_string(getpid()) + ".sock";
  unlink(path.c_str());
  REQUIRE(uv_pipe_init(&s.loop, &s.server, 0) == 0);
  REQUIRE(uv_pipe_bind(&s.server, path.c_str()) == 0);
  s.server.data = &s;
  REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&s.server), 4, [](uv_stream_t* srv, int status) {
    REQUIRE(status == 0);
    auto* st = static_cast<State*>(srv->data);
    uv_pipe_init(&st->loop, &st->conn, 0);
    st->conn.data = st;
    REQUIRE(uv_accept(srv, reinterpret_cast<uv_stream_t*>(&st->conn)) == 0);
    uv_close(reinterpret_cast<uv_handle_t*>(srv), nullptr);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&st->conn),
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
          static char b[64];
          *buf = uv_buf_init(b, sizeof b);
        },
        [](uv_stream_t* c, ssize_t n, const uv_buf_t*) {
          if (n <= 0) return;
          static_cast<State*>(c->data)->read_at = uv_hrtime();
          uv_close(reinterpret_cast<uv_handle_t*>(c), nullptr);
        });
  }) == 0);
  uint64_t start = uv_hrtime();
  std::thread client([&] {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::write(fd, "x", 1) == 1);  // lands before or after the accept: either way
    char c;
    CHECK(::read(fd, &c, 1) == 0);  // the server closed the connection
    close(fd);
  });
  sp::BusyPollStats stats;
  sp::run_loop(&s.loop, 2'000'000'000, &stats);
  client.join();
  unlink(path.c_str());
  REQUIRE(s.read_at != 0);
  CHECK((s.read_at - start) / 1'000'000 < 1000);
  CHECK(uv_loop_close(&s.loop) == 0);
}
