// Blocking host end of an agent connection and a local (unsandboxed) agent launcher.
#include "agent/host_channel.h"

#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

extern char** environ;

namespace sp::agent {

Status HostChannel::send_raw(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("agent channel send");
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<OwnedFrame> HostChannel::read_frame(int timeout_ms) {
  for (;;) {
    SP_TRY_ASSIGN(std::optional<Frame> f, decoder_.next());
    if (f) return OwnedFrame{f->header, std::string(f->payload)};
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno_error("agent channel poll");
    }
    if (r == 0) return Error{ETIMEDOUT, "agent channel: no frame before the timeout"};
    char* area = decoder_.prepare(64 * 1024);
    ssize_t n = ::read(fd_.get(), area, 64 * 1024);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("agent channel read");
    }
    if (n == 0) return Error{ECONNRESET, "agent channel: agent closed the connection"};
    decoder_.commit(static_cast<size_t>(n));
  }
}

Result<OwnedFrame> HostChannel::wait_hello(int timeout_ms) {
  SP_TRY_ASSIGN(OwnedFrame f, read_frame(timeout_ms));
  if (f.header.type != FrameType::kHello) return Error{kEProtocol, "agent channel: expected hello"};
  last_hello_ = f;
  ++hellos_seen_;
  return f;
}

Result<OwnedFrame> HostChannel::round_trip(std::string_view frame, uint64_t id, int timeout_ms) {
  SP_TRY(send_raw(frame));
  for (;;) {
    SP_TRY_ASSIGN(OwnedFrame f, read_frame(timeout_ms));
    if (f.header.type == FrameType::kHello) {
      last_hello_ = std::move(f);
      ++hellos_seen_;
      continue;
    }
    if (f.header.request_id == id) return f;
    // A stale answer (e.g. to a request an earlier caller gave up on): skip it.
  }
}

Result<OwnedFrame> HostChannel::execute(const ExecuteRequest& req, int timeout_ms) {
  scratch_.clear();
  FrameEncoder enc(&scratch_);
  uint64_t id = next_id();
  SP_TRY(encode_execute_request(enc, id, req));
  return round_trip(scratch_, id, timeout_ms);
}

Result<LocalAgent> spawn_local_agent(const LocalAgentOptions& opts) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return errno_error("socketpair");
  UniqueFd host(sv[0]), child(sv[1]);
  std::vector<std::string> args = {opts.python, opts.script, "--fd", "3"};
  if (!opts.root_dir.empty()) {
    args.push_back("--root");
    args.push_back(opts.root_dir);
  }
  args.insert(args.end(), opts.extra_args.begin(), opts.extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // dup2 clears FD_CLOEXEC on the new descriptor, so only fd 3 crosses the exec.
  posix_spawn_file_actions_adddup2(&fa, child.get(), 3);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, opts.python.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return Error{rc, "posix_spawn agent"};
  return LocalAgent{pid, HostChannel(std::move(host))};
}

}  // namespace sp::agent
