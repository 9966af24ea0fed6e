// HostChannel: a blocking host end of one agent connection, for tests, benchmarks and
// tools; not the server's path (the server drives FrameDecoder/FrameEncoder from its
// libuv loop). Also spawn_local_agent(): an unsandboxed agent on a socketpair.
//
// Threading: one thread uses a channel at a time. Every call blocks (poll + read/write)
// up to its timeout. Errors: kEProtocol (malformed frames), ETIMEDOUT, EPIPE/ECONNRESET
// (agent gone), or the errno of the failed syscall.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "agent/protocol.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::agent {

// A frame with its own copy of the payload; view() is valid while the OwnedFrame lives.
struct OwnedFrame {
  FrameHeader header;
  std::string payload;
  Frame view() const { return Frame{header, payload}; }
};

class HostChannel {
 public:
  HostChannel() = default;
  explicit HostChannel(UniqueFd fd) : fd_(std::move(fd)) {}

  int fd() const { return fd_.get(); }
  uint64_t next_id() { return ++last_id_; }

  Status send_raw(std::string_view bytes);
  // The next frame of any type; timeout_ms < 0 waits forever.
  Result<OwnedFrame> read_frame(int timeout_ms);
  // Waits for a kHello (skipping nothing else: any other frame is a protocol error).
  Result<OwnedFrame> wait_hello(int timeout_ms);
  // Sends one encoded frame whose request id is `id`, then returns the first frame
  // answering `id`. kHello frames met on the way (interpreter restarts) are kept in
  // last_hello() and counted in hellos_seen().
  Result<OwnedFrame> round_trip(std::string_view frame, uint64_t id, int timeout_ms);
  // Convenience: encode + round_trip an execute request.
  Result<OwnedFrame> execute(const ExecuteRequest& req, int timeout_ms);

  const OwnedFrame& last_hello() const { return last_hello_; }
  uint32_t hellos_seen() const { return hellos_seen_; }

 private:
  UniqueFd fd_;
  FrameDecoder decoder_;
  uint64_t last_id_ = 0;
  OwnedFrame last_hello_;
  uint32_t hellos_seen_ = 0;
  std::string scratch_;
};

struct LocalAgentOptions {
  std::string python = "/usr/bin/python3";  // Debian's, never pyenv's
  std::string script;                       // path of sandpool_agent.py
  std::string root_dir;                     // working dir and file root (--root)
  std::vector<std::string> extra_args;      // e.g. {"--grace-ms", "500"}
};

struct LocalAgent {
  pid_t pid = -1;  // the supervisor process; the caller kills and reaps it
  HostChannel channel;
};

// Starts `python script --fd 3 --root root_dir extra...` with one end of a socketpair
// as fd 3 and returns the other end. Does not wait for the hello.
Result<LocalAgent> spawn_local_agent(const LocalAgentOptions& opts);

}  // namespace sp::agent
