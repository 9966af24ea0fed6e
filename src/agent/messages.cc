// Payload layouts of the agent messages (PROTOCOL.md §3); framing is in protocol.cc.
#include "agent/protocol.h"

namespace sp::agent {
namespace {

Status expect_type(const Frame& f, FrameType t) {
  if (f.header.type != t) return Error{kEProtocol, "agent message: unexpected frame type"};
  return {};
}

void put_entry(FrameEncoder& e, const FileEntry& x) {
  e.put_bytes(x.name);
  e.put_u8(static_cast<uint8_t>(x.type));
  e.put_u64(x.size_bytes);
  e.put_i64(x.mtime_ns);
}

Result<FileEntry> get_entry(PayloadReader& r) {
  FileEntry x;
  SP_TRY_ASSIGN(x.name, r.get_bytes());
  SP_TRY_ASSIGN(uint8_t type, r.get_u8());
  if (type < 1 || type > 4) return Error{kEProtocol, "agent message: bad file type"};
  x.type = static_cast<FileType>(type);
  SP_TRY_ASSIGN(x.size_bytes, r.get_u64());
  SP_TRY_ASSIGN(x.mtime_ns, r.get_i64());
  return x;
}

}  // namespace

Status encode_hello(FrameEncoder& e, uint64_t id, const Hello& m) {
  e.begin(FrameType::kHello, id);
  e.put_bytes(m.agent_version);
  e.put_u32(m.pid);
  e.put_bytes(m.python_version);
  e.put_u32(m.capabilities);
  e.put_u32(m.restart_count);
  e.put_u8(static_cast<uint8_t>(m.restart_reason));
  return e.finish();
}

Result<Hello> decode_hello(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kHello));
  PayloadReader r(f.payload);
  Hello m;
  SP_TRY_ASSIGN(m.agent_version, r.get_bytes());
  SP_TRY_ASSIGN(m.pid, r.get_u32());
  SP_TRY_ASSIGN(m.python_version, r.get_bytes());
  SP_TRY_ASSIGN(m.capabilities, r.get_u32());
  SP_TRY_ASSIGN(m.restart_count, r.get_u32());
  SP_TRY_ASSIGN(uint8_t reason, r.get_u8());
  if (reason > 3) return Error{kEProtocol, "agent hello: bad restart reason"};
  m.restart_reason = static_cast<RestartReason>(reason);
  SP_TRY(r.done());
  return m;
}

Status encode_empty(FrameEncoder& e, FrameType type, uint64_t id) {
  e.begin(type, id);
  return e.finish();
}

Status encode_execute_request(FrameEncoder& e, uint64_t id, const ExecuteRequest& m) {
  e.begin(FrameType::kExecuteRequest, id, m.warm_up ? kFrameWarmUp : 0);
  e.put_u8(static_cast<uint8_t>(m.mode));
  e.put_u32(m.timeout_ms);
  e.put_u32(m.output_limit_bytes);
  e.put_bytes(m.code);
  e.put_u32(static_cast<uint32_t>(m.argv.size()));
  for (std::string_view a : m.argv) e.put_bytes(a);
  e.put_bytes(m.stdin_bytes);
  return e.finish();
}

Result<ExecuteRequest> decode_execute_request(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kExecuteRequest));
  PayloadReader r(f.payload);
  ExecuteRequest m;
  m.warm_up = f.header.flags == kFrameWarmUp;
  SP_TRY_ASSIGN(uint8_t mode, r.get_u8());
  if (mode > 1) return Error{kEProtocol, "agent execute: bad mode"};
  m.mode = static_cast<ExecMode>(mode);
  SP_TRY_ASSIGN(m.timeout_ms, r.get_u32());
  SP_TRY_ASSIGN(m.output_limit_bytes, r.get_u32());
  SP_TRY_ASSIGN(m.code, r.get_bytes());
  SP_TRY_ASSIGN(uint32_t argc, r.get_u32());
  // Each argument takes at least 4 bytes, so a huge count cannot be honest.
  if (argc > f.payload.size() / 4) return Error{kEProtocol, "agent execute: bad argv count"};
  m.argv.reserve(argc);
  for (uint32_t i = 0; i < argc; ++i) {
    SP_TRY_ASSIGN(std::string_view a, r.get_bytes());
    m.argv.push_back(a);
  }
  SP_TRY_ASSIGN(m.stdin_bytes, r.get_bytes());
  SP_TRY(r.done());
  return m;
}

Status encode_execute_reply(FrameEncoder& e, uint64_t id, const ExecuteReply& m) {
  e.begin(FrameType::kExecuteReply, id);
  e.put_u8(static_cast<uint8_t>(m.status));
  e.put_u8(m.flags);
  e.put_i32(m.exit_code);
  e.put_u64(m.exec_time_us);
  e.put_bytes(m.stdout_bytes);
  e.put_bytes(m.stderr_bytes);
  e.put_bytes(m.result_json);
  return e.finish();
}

Result<ExecuteReply> decode_execute_reply(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kExecuteReply));
  PayloadReader r(f.payload);
  ExecuteReply m;
  SP_TRY_ASSIGN(uint8_t status, r.get_u8());
  if (status > 5) return Error{kEProtocol, "agent reply: bad status"};
  m.status = static_cast<ExecStatus>(status);
  SP_TRY_ASSIGN(m.flags, r.get_u8());
  SP_TRY_ASSIGN(m.exit_code, r.get_i32());
  SP_TRY_ASSIGN(m.exec_time_us, r.get_u64());
  SP_TRY_ASSIGN(m.stdout_bytes, r.get_bytes());
  SP_TRY_ASSIGN(m.stderr_bytes, r.get_bytes());
  SP_TRY_ASSIGN(m.result_json, r.get_bytes());
  SP_TRY(r.done());
  return m;
}

Status encode_path_request(FrameEncoder& e, FrameType type, uint64_t id, const PathRequest& m) {
  e.begin(type, id);
  e.put_bytes(m.path);
  e.put_u8(m.recursive);
  return e.finish();
}

Result<PathRequest> decode_path_request(const Frame& f) {
  FrameType t = f.header.type;
  if (t != FrameType::kListDir && t != FrameType::kStat && t != FrameType::kDelete)
    return Error{kEProtocol, "agent message: unexpected frame type"};
  PayloadReader r(f.payload);
  PathRequest m;
  SP_TRY_ASSIGN(m.path, r.get_bytes());
  SP_TRY_ASSIGN(m.recursive, r.get_u8());
  SP_TRY(r.done());
  return m;
}

Status encode_list_reply(FrameEncoder& e, FrameType type, uint64_t id, const ListReply& m) {
  e.begin(type, id);
  e.put_u32(static_cast<uint32_t>(m.entries.size()));
  for (const FileEntry& x : m.entries) put_entry(e, x);
  e.put_u8(m.truncated);
  return e.finish();
}

Result<ListReply> decode_list_reply(const Frame& f) {
  if (f.header.type != FrameType::kListReply && f.header.type != FrameType::kStatReply)
    return Error{kEProtocol, "agent message: unexpected frame type"};
  PayloadReader r(f.payload);
  ListReply m;
  SP_TRY_ASSIGN(uint32_t n, r.get_u32());
  if (n > f.payload.size() / 21) return Error{kEProtocol, "agent list: bad entry count"};
  m.entries.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    SP_TRY_ASSIGN(FileEntry x, get_entry(r));
    m.entries.push_back(x);
  }
  SP_TRY_ASSIGN(m.truncated, r.get_u8());
  SP_TRY(r.done());
  return m;
}

Status encode_read_file(FrameEncoder& e, uint64_t id, const ReadFileRequest& m) {
  e.begin(FrameType::kReadFile, id);
  e.put_bytes(m.path);
  e.put_u64(m.offset);
  e.put_u32(m.max_bytes);
  return e.finish();
}

Result<ReadFileRequest> decode_read_file(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kReadFile));
  PayloadReader r(f.payload);
  ReadFileRequest m;
  SP_TRY_ASSIGN(m.path, r.get_bytes());
  SP_TRY_ASSIGN(m.offset, r.get_u64());
  SP_TRY_ASSIGN(m.max_bytes, r.get_u32());
  SP_TRY(r.done());
  return m;
}

Status encode_file_data(FrameEncoder& e, uint64_t id, const FileData& m) {
  e.begin(FrameType::kFileData, id);
  e.put_u64(m.file_size);
  e.put_i64(m.mtime_ns);
  e.put_u8(m.eof);
  e.put_bytes(m.data);
  return e.finish();
}

Result<FileData> decode_file_data(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kFileData));
  PayloadReader r(f.payload);
  FileData m;
  SP_TRY_ASSIGN(m.file_size, r.get_u64());
  SP_TRY_ASSIGN(m.mtime_ns, r.get_i64());
  SP_TRY_ASSIGN(m.eof, r.get_u8());
  SP_TRY_ASSIGN(m.data, r.get_bytes());
  SP_TRY(r.done());
  return m;
}

Status encode_write_open(FrameEncoder& e, uint64_t id, const WriteOpen& m) {
  e.begin(FrameType::kWriteOpen, id);
  e.put_bytes(m.path);
  e.put_u8(m.make_parents);
  return e.finish();
}

Result<WriteOpen> decode_write_open(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kWriteOpen));
  PayloadReader r(f.payload);
  WriteOpen m;
  SP_TRY_ASSIGN(m.path, r.get_bytes());
  SP_TRY_ASSIGN(m.make_parents, r.get_u8());
  SP_TRY(r.done());
  return m;
}

Status encode_write_chunk(FrameEncoder& e, uint64_t id, const WriteChunk& m) {
  e.begin(FrameType::kWriteChunk, id);
  e.put_u64(m.upload_id);
  e.put_bytes(m.data);
  return e.finish();
}

Result<WriteChunk> decode_write_chunk(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kWriteChunk));
  PayloadReader r(f.payload);
  WriteChunk m;
  SP_TRY_ASSIGN(m.upload_id, r.get_u64());
  SP_TRY_ASSIGN(m.data, r.get_bytes());
  SP_TRY(r.done());
  return m;
}

Status encode_upload_ref(FrameEncoder& e, FrameType type, uint64_t id, const UploadRef& m) {
  e.begin(type, id);
  e.put_u64(m.upload_id);
  return e.finish();
}

Result<UploadRef> decode_upload_ref(const Frame& f) {
  if (f.header.type != FrameType::kWriteClose && f.header.type != FrameType::kWriteAbort)
    return Error{kEProtocol, "agent message: unexpected frame type"};
  PayloadReader r(f.payload);
  UploadRef m;
  SP_TRY_ASSIGN(m.upload_id, r.get_u64());
  SP_TRY(r.done());
  return m;
}

Status encode_ok(FrameEncoder& e, uint64_t id, const OkReply& m) {
  e.begin(FrameType::kOk, id);
  e.put_u64(m.value);
  return e.finish();
}

Result<OkReply> decode_ok(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kOk));
  PayloadReader r(f.payload);
  OkReply m;
  SP_TRY_ASSIGN(m.value, r.get_u64());
  SP_TRY(r.done());
  return m;
}

Status encode_error(FrameEncoder& e, uint64_t id, const ErrorReply& m) {
  e.begin(FrameType::kError, id);
  e.put_i32(m.errno_code);
  e.put_bytes(m.message);
  return e.finish();
}

Result<ErrorReply> decode_error(const Frame& f) {
  SP_TRY(expect_type(f, FrameType::kError));
  PayloadReader r(f.payload);
  ErrorReply m;
  SP_TRY_ASSIGN(m.errno_code, r.get_i32());
  SP_TRY_ASSIGN(m.message, r.get_bytes());
  SP_TRY(r.done());
  return m;
}

const char* exec_status_name(ExecStatus s) {
  switch (s) {
    case ExecStatus::kSuccess: return "Success";
    case ExecStatus::kFailure: return "Failure";
    case ExecStatus::kTimeout: return "Timeout";
    case ExecStatus::kOutOfMemory: return "OutOfMemory";
    case ExecStatus::kCrashed: return "InterpreterCrashed";
    case ExecStatus::kInterrupted: return "Interrupted";
  }
  return "Unknown";
}

}  // namespace sp::agent
