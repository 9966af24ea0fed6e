// The agent wire protocol (framing + message codecs) shared by the server and tests;
// not the transport: callers own the socket and the loop. See src/agent/PROTOCOL.md.
//
// Threading: every type here is plain data used by one thread at a time (the loop
// thread in the server). Nothing blocks, nothing allocates except into buffers the
// caller owns (the encoder's output string, the decoder's internal buffer).
// Errors: malformed or oversized input yields Error{kEProtocol|kETooLarge, where};
// the peer that sent it is broken and its sandbox should be ended.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace sp::agent {

inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr uint32_t kFrameMagic = 0x31505053;  // "SPP1" little-endian
inline constexpr size_t kFrameHeaderBytes = 20;
inline constexpr uint32_t kDefaultMaxPayloadBytes = 8u << 20;
inline constexpr uint32_t kFileChunkBytes = 256u << 10;  // suggested read/write chunk

enum class FrameType : uint8_t {
  kHello = 1,           // agent -> host, at start and after every interpreter restart
  kPing = 2,            // host -> agent
  kPong = 3,            // agent -> host
  kExecuteRequest = 4,  // host -> agent
  kExecuteReply = 5,    // agent -> host
  kInterrupt = 6,       // host -> agent, no reply; the running execute ends Interrupted
  kListDir = 7,         // host -> agent, reply kListReply
  kListReply = 8,
  kStat = 9,            // host -> agent, reply kStatReply
  kStatReply = 10,
  kReadFile = 11,       // host -> agent, reply kFileData
  kFileData = 12,
  kWriteOpen = 13,      // host -> agent, reply kOk (value = upload id = this request id)
  kWriteChunk = 14,     // host -> agent, reply kOk (value = bytes written so far)
  kWriteClose = 15,     // host -> agent, reply kOk (value = final size); commits
  kWriteAbort = 16,     // host -> agent, reply kOk
  kOk = 17,
  kDelete = 18,         // host -> agent, reply kOk
  kError = 19,          // agent -> host, reply to any request that failed
  kReseed = 20,         // host -> agent, reply kOk
};
inline constexpr uint8_t kMaxFrameType = 20;
// The one header flag: on an ExecuteRequest only, the host's own execute before the sandbox serves
// a session. The agent runs it like any cell and keeps nothing from it that a session's cell could
// reuse (its compiled code, cell number, source). Any other flags value is a protocol error.
inline constexpr uint16_t kFrameWarmUp = 1;

struct FrameHeader {
  uint32_t payload_bytes = 0;
  uint8_t version = kProtocolVersion;
  FrameType type = FrameType::kPing;
  uint16_t flags = 0;  // 0, or kFrameWarmUp on an ExecuteRequest
  uint64_t request_id = 0;
};

// A decoded frame; `payload` points into the decoder's buffer and is valid until the
// next call to any FrameDecoder member.
struct Frame {
  FrameHeader header;
  std::string_view payload;
};

// Incremental decoder: feed bytes as they arrive (split anywhere), take whole frames.
// Usable from a libuv read callback: either feed(buf) or read into prepare()/commit().
// After the first protocol error every next() returns that error (the stream is dead).
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_payload_bytes = kDefaultMaxPayloadBytes)
      : max_payload_bytes_(max_payload_bytes) {}

  void feed(std::string_view bytes);
  // Returns a writable area of at least `min_bytes`; commit(n) then adds n of them.
  char* prepare(size_t min_bytes);
  void commit(size_t n) { end_ += n; }

  // The next complete frame, std::nullopt when more bytes are needed, or an error.
  Result<std::optional<Frame>> next();
  size_t buffered_bytes() const { return end_ - begin_; }
  // Bytes allocated for buffering (released when idle and over 256 KiB).
  size_t capacity_bytes() const { return buf_.size(); }

 private:
  void compact();
  std::vector<char> buf_;
  size_t begin_ = 0;
  size_t end_ = 0;
  uint32_t max_payload_bytes_;
  std::optional<Error> error_;
};

// Encoder appending frames to a caller-owned string. Usage: begin(type, id), put_*,
// finish(); finish() patches the length and fails (dropping the frame) when the payload
// is over `max_payload_bytes`.
class FrameEncoder {
 public:
  explicit FrameEncoder(std::string* out, uint32_t max_payload_bytes = kDefaultMaxPayloadBytes)
      : out_(out), max_payload_bytes_(max_payload_bytes) {}
  void begin(FrameType type, uint64_t request_id, uint16_t flags = 0);
  void put_u8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void put_u32(uint32_t v);
  void put_i32(int32_t v) { put_u32(static_cast<uint32_t>(v)); }
  void put_u64(uint64_t v);
  void put_i64(int64_t v) { put_u64(static_cast<uint64_t>(v)); }
  void put_bytes(std::string_view v);  // u32 length + bytes
  Status finish();

 private:
  std::string* out_;
  uint32_t max_payload_bytes_;
  size_t start_ = 0;
};

// Bounds-checked reader over one payload; every get_* fails with kEProtocol on underrun.
class PayloadReader {
 public:
  explicit PayloadReader(std::string_view payload) : p_(payload) {}
  Result<uint8_t> get_u8();
  Result<uint32_t> get_u32();
  Result<int32_t> get_i32();
  Result<uint64_t> get_u64();
  Result<int64_t> get_i64();
  Result<std::string_view> get_bytes();
  // Fails when bytes are left over (a message longer than its type says).
  Status done() const;

 private:
  std::string_view p_;
  size_t pos_ = 0;
};

// ---- messages (views point into the frame payload they were decoded from) ----

enum Capability : uint32_t {
  kCapNumpy = 1, kCapMatplotlib = 2, kCapShell = 4, kCapInterrupt = 8,
};
enum class RestartReason : uint8_t { kInitial = 0, kTimeout = 1, kCrashed = 2, kOutOfMemory = 3 };

struct Hello {
  std::string_view agent_version;
  uint32_t pid = 0;  // the interpreter (worker) pid inside the sandbox
  std::string_view python_version;
  uint32_t capabilities = 0;
  uint32_t restart_count = 0;
  RestartReason restart_reason = RestartReason::kInitial;
};

enum class ExecMode : uint8_t { kPython = 0, kShell = 1 };

struct ExecuteRequest {
  ExecMode mode = ExecMode::kPython;
  uint32_t timeout_ms = 120'000;
  uint32_t output_limit_bytes = 4096;  // per stream
  std::string_view code;               // python source, or the bash -c script
  std::vector<std::string_view> argv;  // shell: run argv directly when not empty
  std::string_view stdin_bytes;        // shell only
  bool warm_up = false;                // the host's own execute (kFrameWarmUp)
};

enum class ExecStatus : uint8_t {
  kSuccess = 0, kFailure = 1, kTimeout = 2, kOutOfMemory = 3, kCrashed = 4, kInterrupted = 5,
};
inline constexpr uint8_t kReplyStdoutTruncated = 1, kReplyStderrTruncated = 2,
                         kReplyVariablesLost = 4, kReplyResultTruncated = 8;

struct ExecuteReply {
  ExecStatus status = ExecStatus::kSuccess;
  uint8_t flags = 0;      // kReply* bits
  int32_t exit_code = 0;  // shell mode: the exit status (-signal when killed)
  uint64_t exec_time_us = 0;
  std::string_view stdout_bytes;
  std::string_view stderr_bytes;
  std::string_view result_json;  // <R> of API.md §3 as JSON text
};

enum class FileType : uint8_t { kFile = 1, kDirectory = 2, kSymlink = 3, kOther = 4 };

struct FileEntry {
  std::string_view name;  // path relative to /mnt/data (list) or as asked (stat)
  FileType type = FileType::kFile;
  uint64_t size_bytes = 0;
  int64_t mtime_ns = 0;  // since the Unix epoch
};

struct PathRequest {    // kListDir (recursive), kStat, kDelete
  std::string_view path;
  uint8_t recursive = 0;
};
struct ListReply {
  std::vector<FileEntry> entries;
  uint8_t truncated = 0;  // more entries than fit in one frame
};
struct ReadFileRequest { std::string_view path; uint64_t offset = 0; uint32_t max_bytes = kFileChunkBytes; };
struct FileData { uint64_t file_size = 0; int64_t mtime_ns = 0; uint8_t eof = 0; std::string_view data; };
struct WriteOpen { std::string_view path; uint8_t make_parents = 1; };
struct WriteChunk { uint64_t upload_id = 0; std::string_view data; };
struct UploadRef { uint64_t upload_id = 0; };  // kWriteClose, kWriteAbort
struct OkReply { uint64_t value = 0; };
struct ErrorReply { int32_t errno_code = 0; std::string_view message; };

// Encoders append one whole frame to the encoder's string.
Status encode_hello(FrameEncoder& e, uint64_t id, const Hello& m);
Status encode_empty(FrameEncoder& e, FrameType type, uint64_t id);  // ping, pong, interrupt, reseed
Status encode_execute_request(FrameEncoder& e, uint64_t id, const ExecuteRequest& m);
Status encode_execute_reply(FrameEncoder& e, uint64_t id, const ExecuteReply& m);
Status encode_path_request(FrameEncoder& e, FrameType type, uint64_t id, const PathRequest& m);
Status encode_list_reply(FrameEncoder& e, FrameType type, uint64_t id, const ListReply& m);
Status encode_read_file(FrameEncoder& e, uint64_t id, const ReadFileRequest& m);
Status encode_file_data(FrameEncoder& e, uint64_t id, const FileData& m);
Status encode_write_open(FrameEncoder& e, uint64_t id, const WriteOpen& m);
Status encode_write_chunk(FrameEncoder& e, uint64_t id, const WriteChunk& m);
Status encode_upload_ref(FrameEncoder& e, FrameType type, uint64_t id, const UploadRef& m);
Status encode_ok(FrameEncoder& e, uint64_t id, const OkReply& m);
Status encode_error(FrameEncoder& e, uint64_t id, const ErrorReply& m);

// Decoders check the frame type and the exact payload length.
Result<Hello> decode_hello(const Frame& f);
Result<ExecuteRequest> decode_execute_request(const Frame& f);
Result<ExecuteReply> decode_execute_reply(const Frame& f);
Result<PathRequest> decode_path_request(const Frame& f);
Result<ListReply> decode_list_reply(const Frame& f);  // kListReply or kStatReply
Result<ReadFileRequest> decode_read_file(const Frame& f);
Result<FileData> decode_file_data(const Frame& f);
Result<WriteOpen> decode_write_open(const Frame& f);
Result<WriteChunk> decode_write_chunk(const Frame& f);
Result<UploadRef> decode_upload_ref(const Frame& f);
Result<OkReply> decode_ok(const Frame& f);
Result<ErrorReply> decode_error(const Frame& f);

const char* exec_status_name(ExecStatus s);  // "Success", "Failure", "Timeout", ...

}  // namespace sp::agent
