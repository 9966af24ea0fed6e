// Tests for run_loop: it ends like uv_run(UV_RUN_DEFAULT), handles I/O and timers, counts the
// events it found while busy-polling, and runs timers that fall due while it polls.
#include "util/event_loop.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>

namespace {

// A socketpair whose end 0 the loop reads, one byte a turn; each read writes the next byte into
// end 1, so the loop always has I/O ready, until the `n`th byte, which closes the handle and so
// ends the loop.
struct PingLoop {
  uv_loop_t loop{};
  uv_poll_t poll{};
  int fds[2] = {-1, -1};
  int n = 0;
  int read = 0;

  explicit PingLoop(int count) : n(count) {
    REQUIRE(uv_loop_init(&loop) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    REQUIRE(uv_poll_init(&loop, &poll, fds[0]) == 0);
    poll.data = this;
    uv_poll_start(&poll, UV_READABLE, [](uv_poll_t* h, int, int) {
      auto* self = static_cast<PingLoop*>(h->data);
      char c;
      if (::read(self->fds[0], &c, 1) != 1) return;
      if (++self->read == self->n) {
        uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
        return;
      }
      REQUIRE(::write(self->fds[1], "x", 1) == 1);
    });
    REQUIRE(::write(fds[1], "x", 1) == 1);
  }
  ~PingLoop() {
    CHECK(uv_loop_close(&loop) == 0);
    close(fds[0]);
    close(fds[1]);
  }
};

}  // namespace

TEST_CASE("run_loop: without busy polling, handles I/O and returns when no handle is left") {
  PingLoop p(20);
  sp::BusyPollStats stats;
  sp::run_loop(&p.loop, 0, &stats);
  CHECK(p.read == 20);
  CHECK(stats.hits == 0);
  CHECK(stats.spin_ns == 0);
}

TEST_CASE("run_loop: the I/O found while it polls is counted, and extends the window") {
  PingLoop p(50);
  sp::BusyPollStats stats;
  // The first byte is handled by the turn that may block; each of the next 48 is found by the
  // poll that follows the turn before (the 50th ends the loop in its own turn). A window of 1 µs
  // would have ended long before the 50th byte without the extensions, but the loop never needs
  // to block: it never yields either.
  sp::run_loop(&p.loop, 1'000, &stats);
  CHECK(p.read == 50);
  CHECK(stats.hits == 48);
  CHECK(stats.spin_ns == 0);
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
