// Unit tests of the agent frame codec: round trips, split input, garbage, oversize.
#include "agent/protocol.h"

#include <doctest/doctest.h>

#include <cstring>
#include <random>

using namespace sp::agent;

namespace {

std::string one_execute(uint64_t id, std::string_view code) {
  std::string out;
  FrameEncoder enc(&out);
  ExecuteRequest req;
  req.code = code;
  req.timeout_ms = 1500;
  req.output_limit_bytes = 77;
  req.argv = {"bash", "-c", "echo hi"};
  req.stdin_bytes = std::string_view("in\0put", 6);
  REQUIRE(encode_execute_request(enc, id, req).ok());
  return out;
}

}  // namespace

TEST_CASE("execute request round trip") {
  std::string bytes = one_execute(42, "print(1)");
  FrameDecoder dec;
  dec.feed(bytes);
  auto f = dec.next();
  REQUIRE(f.ok());
  REQUIRE(f.value().has_value());
  const Frame& fr = *f.value();
  CHECK(fr.header.request_id == 42);
  CHECK(fr.header.type == FrameType::kExecuteRequest);
  auto m = decode_execute_request(fr);
  REQUIRE(m.ok());
  CHECK(m->code == "print(1)");
  CHECK(m->timeout_ms == 1500);
  CHECK(m->output_limit_bytes == 77);
  REQUIRE(m->argv.size() == 3);
  CHECK(m->argv[2] == "echo hi");
  CHECK(m->stdin_bytes == std::string_view("in\0put", 6));
  auto again = dec.next();
  REQUIRE(again.ok());
  CHECK_FALSE(again.value().has_value());
}

TEST_CASE("every message type round trips") {
  std::string out;
  FrameEncoder enc(&out);
  Hello h{"0.1", 1234, "3.11.2", kCapNumpy | kCapShell, 2, RestartReason::kTimeout};
  REQUIRE(encode_hello(enc, 1, h).ok());
  ExecuteReply rep{ExecStatus::kTimeout, kReplyVariablesLost | kReplyStdoutTruncated, -9, 12345,
                   "out", std::string_view("e\0rr", 4), "\"nan\""};
  REQUIRE(encode_execute_reply(enc, 2, rep).ok());
  ListReply lr;
  lr.entries.push_back(FileEntry{"a/b.csv", FileType::kFile, 16, 1700000000123456789});
  lr.entries.push_back(FileEntry{"a", FileType::kDirectory, 0, -5});
  lr.truncated = 1;
  REQUIRE(encode_list_reply(enc, FrameType::kListReply, 3, lr).ok());
  REQUIRE(encode_file_data(enc, 4, FileData{99, 7, 1, "chunk"}).ok());
  REQUIRE(encode_write_chunk(enc, 5, WriteChunk{4, "data"}).ok());
  REQUIRE(encode_error(enc, 6, ErrorReply{28, "No space left on device"}).ok());
  REQUIRE(encode_path_request(enc, FrameType::kDelete, 7, PathRequest{"x/y", 0}).ok());
  REQUIRE(encode_read_file(enc, 8, ReadFileRequest{"f", 10, 20}).ok());
  REQUIRE(encode_write_open(enc, 9, WriteOpen{"d/e", 1}).ok());
  REQUIRE(encode_upload_ref(enc, FrameType::kWriteClose, 10, UploadRef{9}).ok());
  REQUIRE(encode_ok(enc, 11, OkReply{123}).ok());
  REQUIRE(encode_empty(enc, FrameType::kPing, 12).ok());

  FrameDecoder dec;
  dec.feed(out);
  auto next = [&] {
    auto f = dec.next();
    REQUIRE(f.ok());
    REQUIRE(f.value().has_value());
    return *f.value();
  };
  auto hh = decode_hello(next());
  REQUIRE(hh.ok());
  CHECK(hh->pid == 1234);
  CHECK(hh->python_version == "3.11.2");
  CHECK(hh->restart_reason == RestartReason::kTimeout);
  auto rr = decode_execute_reply(next());
  REQUIRE(rr.ok());
  CHECK(rr->status == ExecStatus::kTimeout);
  CHECK(rr->exit_code == -9);
  CHECK(rr->exec_time_us == 12345);
  CHECK(rr->stderr_bytes.size() == 4);
  CHECK(rr->result_json == "\"nan\"");
  auto ll = decode_list_reply(next());
  REQUIRE(ll.ok());
  REQUIRE(ll->entries.size() == 2);
  CHECK(ll->entries[0].mtime_ns == 1700000000123456789);
  CHECK(ll->entries[1].type == FileType::kDirectory);
  CHECK(ll->entries[1].mtime_ns == -5);
  CHECK(ll->truncated == 1);
  auto fd = decode_file_data(next());
  REQUIRE(fd.ok());
  CHECK(fd->data == "chunk");
  CHECK(fd->eof == 1);
  auto wc = decode_write_chunk(next());
  REQUIRE(wc.ok());
  CHECK(wc->upload_id == 4);
  auto er = decode_error(next());
  REQUIRE(er.ok());
  CHECK(er->errno_code == 28);
  auto pr = decode_path_request(next());
  REQUIRE(pr.ok());
  CHECK(pr->path == "x/y");
  auto rf = decode_read_file(next());
  REQUIRE(rf.ok());
  CHECK(rf->offset == 10);
  auto wo = decode_write_open(next());
  REQUIRE(wo.ok());
  CHECK(wo->path == "d/e");
  auto ur = decode_upload_ref(next());
  REQUIRE(ur.ok());
  CHECK(ur->upload_id == 9);
  auto ok = decode_ok(next());
  REQUIRE(ok.ok());
  CHECK(ok->value == 123);
  Frame ping = next();
  CHECK(ping.header.type == FrameType::kPing);
  CHECK(ping.payload.empty());
}

TEST_CASE("input split at every byte boundary decodes the same frames") {
  std::string stream = one_execute(1, "a = 1") + one_execute(2, std::string(3000, 'x')) +
                       one_execute(3, "");
  for (size_t step : {1u, 2u, 3u, 7u, 19u, 20u, 21u, 1000u}) {
    FrameDecoder dec;
    std::vector<uint64_t> ids;
    for (size_t i = 0; i < stream.size(); i += step) {
      dec.feed(std::string_view(stream).substr(i, step));
      for (;;) {
        auto f = dec.next();
        REQUIRE(f.ok());
        if (!f.value()) break;
        auto m = decode_execute_request(*f.value());
        REQUIRE(m.ok());
        ids.push_back(f.value()->header.request_id);
      }
    }
    CHECK(ids == std::vector<uint64_t>{1, 2, 3});
    CHECK(dec.buffered_bytes() == 0);
  }
}

TEST_CASE("prepare/commit (libuv style) works like feed") {
  std::string stream = one_execute(5, "print(1)");
  FrameDecoder dec;
  size_t half = stream.size() / 2;
  std::memcpy(dec.prepare(half), stream.data(), half);
  dec.commit(half);
  CHECK_FALSE(dec.next().value().has_value());
  std::memcpy(dec.prepare(65536), stream.data() + half, stream.size() - half);
  dec.commit(stream.size() - half);
  auto f = dec.next();
  REQUIRE(f.ok());
  REQUIRE(f.value().has_value());
  CHECK(f.value()->header.request_id == 5);
}

TEST_CASE("oversized frame is an error, and the error is sticky") {
  std::string stream = one_execute(1, std::string(5000, 'y'));
  FrameDecoder dec(1024);
  dec.feed(std::string_view(stream).substr(0, kFrameHeaderBytes));
  auto f = dec.next();
  REQUIRE_FALSE(f.ok());
  CHECK(f.error().code == sp::kETooLarge);
  dec.feed(one_execute(2, "x"));
  CHECK_FALSE(dec.next().ok());
}

TEST_CASE("encoder refuses a payload over its limit and leaves the buffer intact") {
  std::string out = "prefix";
  FrameEncoder enc(&out, 100);
  ExecuteRequest req;
  std::string big(200, 'z');
  req.code = big;
  auto st = encode_execute_request(enc, 1, req);
  CHECK_FALSE(st.ok());
  CHECK(st.error().code == sp::kETooLarge);
  CHECK(out == "prefix");
}

TEST_CASE("bad header fields are protocol errors") {
  std::string good = one_execute(1, "x");
  auto check_bad = [](std::string bytes) {
    FrameDecoder dec;
    dec.feed(bytes);
    auto f = dec.next();
    CHECK_FALSE(f.ok());
    if (!f.ok()) CHECK(f.error().code == sp::kEProtocol);
  };
  std::string b = good; b[0] ^= 1; check_bad(b);        // magic
  b = good; b[8] = 9; check_bad(b);                      // version
  b = good; b[9] = 0; check_bad(b);                      // type 0
  b = good; b[9] = 99; check_bad(b);                     // unknown type
  b = good; b[10] = 2; check_bad(b);                     // reserved flags
  b = good; b[11] = 1; check_bad(b);
  std::string ping;
  FrameEncoder enc(&ping);
  REQUIRE(encode_empty(enc, FrameType::kPing, 3).ok());
  ping[10] = 1; check_bad(ping);                         // warm-up on anything but an execute
}

TEST_CASE("the warm-up flag round trips on an execute request") {
  std::string out;
  FrameEncoder enc(&out);
  ExecuteRequest req;
  req.code = "print(1)";
  req.warm_up = true;
  REQUIRE(encode_execute_request(enc, 5, req).ok());
  CHECK(out[10] == 1);
  CHECK(out[11] == 0);
  FrameDecoder dec;
  dec.feed(out);
  auto f = dec.next();
  REQUIRE(f.ok());
  REQUIRE(f.value().has_value());
  CHECK(f.value()->header.flags == kFrameWarmUp);
  auto m = decode_execute_request(*f.value());
  REQUIRE(m.ok());
  CHECK(m->warm_up);
  CHECK(m->code == "print(1)");
  // and a plain one decodes without it
  auto plain = one_execute(6, "x");
  FrameDecoder dec2;
  dec2.feed(plain);
  auto g = dec2.next();
  REQUIRE(g.ok());
  REQUIRE(g.value().has_value());
  CHECK_FALSE(decode_execute_request(*g.value())->warm_up);
}

TEST_CASE("malformed payloads are errors, not crashes") {
  std::string good = one_execute(1, "print(1)");
  // Truncate the payload at every length and fix up the header length.
  for (size_t cut = 0; cut + kFrameHeaderBytes < good.size(); ++cut) {
    std::string b = good.substr(0, kFrameHeaderBytes + cut);
    uint32_t n = static_cast<uint32_t>(cut);
    std::memcpy(b.data() + 4, &n, 4);
    FrameDecoder dec;
    dec.feed(b);
    auto f = dec.next();
    REQUIRE(f.ok());
    REQUIRE(f.value().has_value());
    CHECK_FALSE(decode_execute_request(*f.value()).ok());
  }
  // Trailing bytes.
  std::string b = good + "!";
  uint32_t n = static_cast<uint32_t>(b.size() - kFrameHeaderBytes);
  std::memcpy(b.data() + 4, &n, 4);
  FrameDecoder dec;
  dec.feed(b);
  CHECK_FALSE(decode_execute_request(*dec.next().value()).ok());
  // Wrong type for the decoder.
  FrameDecoder dec2;
  dec2.feed(good);
  CHECK_FALSE(decode_execute_reply(*dec2.next().value()).ok());
}

TEST_CASE("random garbage never crashes the decoder or the message decoders") {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 2000; ++round) {
    std::string b(rng() % 200, '\0');
    for (char& c : b) c = static_cast<char>(rng());
    if (round % 2 == 0 && b.size() >= kFrameHeaderBytes) {
      // A valid header over a random payload exercises the message decoders.
      uint32_t magic = kFrameMagic, len = static_cast<uint32_t>(b.size() - kFrameHeaderBytes);
      std::memcpy(b.data(), &magic, 4);
      std::memcpy(b.data() + 4, &len, 4);
      b[8] = kProtocolVersion;
      b[9] = static_cast<char>(1 + rng() % kMaxFrameType);
      b[10] = b[11] = 0;
    }
    FrameDecoder dec(4096);
    dec.feed(b);
    auto f = dec.next();
    if (!f.ok() || !f.value()) continue;
    const Frame& fr = *f.value();
    (void)decode_hello(fr);
    (void)decode_execute_request(fr);
    (void)decode_execute_reply(fr);
    (void)decode_path_request(fr);
    (void)decode_list_reply(fr);
    (void)decode_read_file(fr);
    (void)decode_file_data(fr);
    (void)decode_write_open(fr);
    (void)decode_write_chunk(fr);
    (void)decode_upload_ref(fr);
    (void)decode_ok(fr);
    (void)decode_error(fr);
  }
}

TEST_CASE("a big frame's buffer is released once consumed") {
  std::string big = one_execute(1, std::string(3 << 20, 'b'));
  FrameDecoder dec;
  dec.feed(big);
  auto f = dec.next();
  REQUIRE(f.ok());
  REQUIRE(f.value().has_value());
  CHECK(dec.capacity_bytes() >= big.size());
  CHECK_FALSE(dec.next().value().has_value());
  CHECK(dec.capacity_bytes() == 0);
  dec.feed(one_execute(2, "x"));
  CHECK(dec.next().value()->header.request_id == 2);
}
