// Tests of HostChannel + spawn_local_agent against the real Python agent (Debian's
// /usr/bin/python3): the C++ host end of the contract, end to end over a socketpair.
#include "agent/host_channel.h"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

using namespace sp::agent;

namespace {

// In a sanitized build the agents we start (Debian's python3, loading the sanitized supervisor
// module) need ASan's runtime preloaded and options of their own (tests/unit/agent/meson.build);
// this process started with its own, leak checks included, and keeps them.
void agent_sanitizer_env() {
  const char* rt = std::getenv("SANDPOOL_TEST_AGENT_PRELOAD");
  if (!rt) return;
  const char* opts = std::getenv("SANDPOOL_TEST_AGENT_ASAN_OPTIONS");
  setenv("LD_PRELOAD", rt, 1);
  setenv("ASAN_OPTIONS", opts ? opts : "", 1);
}

struct Fixture {
  Fixture() {
    agent_sanitizer_env();
    char tmpl[] = "/tmp/sandpool-host-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    root = tmpl;
    LocalAgentOptions opts;
    opts.script = SANDPOOL_SOURCE_ROOT "/src/agent/python/sandpool_agent.py";
    opts.root_dir = root;
    opts.extra_args = {"--grace-ms", "300"};
    auto a = spawn_local_agent(opts);
    REQUIRE(a.ok());
    agent = std::move(a.value());
    auto hello = agent.channel.wait_hello(30'000);
    REQUIRE(hello.ok());
  }
  ~Fixture() {
    agent.channel.close();  // EOF: the agent exits 0 by itself
    if (agent.pid > 0) {
      int status = 0;
      ::waitpid(agent.pid, &status, 0);
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
    }
    std::string cmd = "rm -rf '" + root + "'";
    CHECK(std::system(cmd.c_str()) == 0);
  }
  ExecuteReply run(const std::string& code, uint32_t timeout_ms = 10'000) {
    ExecuteRequest req;
    req.code = code;
    req.timeout_ms = timeout_ms;
    auto f = agent.channel.execute(req, 30'000);
    REQUIRE(f.ok());
    last = std::move(f.value());
    auto rep = decode_execute_reply(last.view());
    REQUIRE(rep.ok());
    return rep.value();
  }
  std::string root;
  LocalAgent agent;
  OwnedFrame last;
};

}  // namespace

TEST_CASE("hello describes the interpreter") {
  Fixture fx;
  auto h = decode_hello(fx.agent.channel.last_hello().view());
  REQUIRE(h.ok());
  CHECK(h->python_version.substr(0, 4) == "3.11");
  CHECK(h->restart_count == 0);
  CHECK((h->capabilities & kCapShell) != 0);
}

TEST_CASE("execute round trips values and output") {
  Fixture fx;
  ExecuteReply r = fx.run("x = 20\nprint('hi')\nx * 2 + 2");
  CHECK(r.status == ExecStatus::kSuccess);
  CHECK(r.stdout_bytes == "hi\n");
  CHECK(r.result_json == "42");
  r = fx.run("1/0");
  CHECK(r.status == ExecStatus::kFailure);
  CHECK(r.stderr_bytes.find("ZeroDivisionError") != std::string_view::npos);
}

TEST_CASE("a hung cell is timed out, the interpreter restarted, and a new hello seen") {
  Fixture fx;
  fx.run("v = 1");
  ExecuteReply r = fx.run("import itertools\nsum(itertools.repeat(1, 10**15))", 200);
  CHECK(r.status == ExecStatus::kTimeout);
  CHECK((r.flags & kReplyVariablesLost) != 0);
  r = fx.run("'v' in globals()");
  CHECK(r.result_json == "false");
  CHECK(fx.agent.channel.hellos_seen() == 2);
  auto h = decode_hello(fx.agent.channel.last_hello().view());
  REQUIRE(h.ok());
  CHECK(h->restart_reason == RestartReason::kTimeout);
}

TEST_CASE("upload in chunks, read back, list, errors") {
  Fixture fx;
  HostChannel& ch = fx.agent.channel;
  std::string buf;
  FrameEncoder enc(&buf);
  uint64_t open_id = ch.next_id();
  REQUIRE(encode_write_open(enc, open_id, WriteOpen{"/mnt/data/d/f.bin", 1}).ok());
  auto f = ch.round_trip(buf, open_id, 10'000);
  REQUIRE(f.ok());
  REQUIRE(f->header.type == FrameType::kOk);
  // Pipeline three chunks, then read the three Oks.
  buf.clear();
  std::string chunk(100'000, 'q');
  uint64_t ids[3];
  for (uint64_t& id : ids) {
    id = ch.next_id();
    REQUIRE(encode_write_chunk(enc, id, WriteChunk{open_id, chunk}).ok());
  }
  REQUIRE(ch.send_raw(buf).ok());
  for (uint64_t id : ids) {
    auto ok = ch.read_frame(10'000);
    REQUIRE(ok.ok());
    CHECK(ok->header.request_id == id);
    CHECK(ok->header.type == FrameType::kOk);
  }
  buf.clear();
  uint64_t close_id = ch.next_id();
  REQUIRE(encode_upload_ref(enc, FrameType::kWriteClose, close_id, UploadRef{open_id}).ok());
  f = ch.round_trip(buf, close_id, 10'000);
  REQUIRE(f.ok());
  CHECK(decode_ok(f->view())->value == 300'000);

  buf.clear();
  uint64_t rid = ch.next_id();
  REQUIRE(encode_read_file(enc, rid, ReadFileRequest{"d/f.bin", 299'990, 1000}).ok());
  f = ch.round_trip(buf, rid, 10'000);
  REQUIRE(f.ok());
  auto data = decode_file_data(f->view());
  REQUIRE(data.ok());
  CHECK(data->data == std::string(10, 'q'));
  CHECK(data->eof == 1);
  CHECK(data->file_size == 300'000);

  buf.clear();
  uint64_t lid = ch.next_id();
  REQUIRE(encode_path_request(enc, FrameType::kListDir, lid, PathRequest{"", 1}).ok());
  f = ch.round_trip(buf, lid, 10'000);
  REQUIRE(f.ok());
  auto list = decode_list_reply(f->view());
  REQUIRE(list.ok());
  REQUIRE(list->entries.size() == 2);
  CHECK(list->entries[0].name == "d");
  CHECK(list->entries[1].name == "d/f.bin");

  buf.clear();
  uint64_t bad = ch.next_id();
  REQUIRE(encode_read_file(enc, bad, ReadFileRequest{"../etc/passwd", 0, 10}).ok());
  f = ch.round_trip(buf, bad, 10'000);
  REQUIRE(f.ok());
  auto err = decode_error(f->view());
  REQUIRE(err.ok());
  CHECK(err->errno_code == EINVAL);
}

TEST_CASE("garbage from the host ends the agent with the protocol exit code") {
  Fixture fx;
  REQUIRE(fx.agent.channel.send_raw(std::string(64, '\x7f')).ok());
  int status = 0;
  ::waitpid(fx.agent.pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  fx.agent.pid = -1;  // reaped
}
