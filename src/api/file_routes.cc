// File handlers: each turns one HTTP request into a short conversation with the session's agent.
#include "api/file_routes.h"

#include <deque>
#include <memory>
#include <unordered_map>

#include "agent/protocol.h"
#include "api/errors.h"
#include "api/json.h"
#include "api/multipart.h"
#include "api/params.h"
#include "api/session_routes.h"
#include "http/response.h"

namespace sp::api {
namespace {

using pool::AcquireError;
using pool::Pool;
using pool::Session;

constexpr const char* kJson = "application/json; charset=utf-8";

struct Files {
  pool::PoolManager& pools;
  std::function<bool(http::Exchange&)> authorize;  // answers 401 itself
  std::vector<std::string> api_keys;
  // For heads of streamed requests, which cannot be answered yet: only checks.
  bool authorize_quiet(http::Exchange& ex) const {
    return api_keys.empty() || token_matches(ex.request().header("authorization"), api_keys);
  }
};

struct Where {
  bool pooled;
};

std::string iso(int64_t mtime_ns) { return pool::format_iso8601_ms(mtime_ns / 1000000); }

// The answer for a failed file operation: the agent's errno mapped to API.md's statuses.
struct FileError {
  int status;
  const char* code;
  std::string message;
};

FileError file_error_of(const agent::Frame* f, const Error* err, std::string_view name) {
  if (err) return {500, "SessionLost", "the session's sandbox did not answer: " + err->message()};
  int code = 0;
  std::string message = "unexpected answer from the agent";
  if (f->header.type == agent::FrameType::kError) {
    auto e = agent::decode_error(*f);
    if (e.ok()) {
      code = e.value().errno_code;
      message = std::string(e.value().message);
    }
  }
  switch (code) {
    case ENOENT: return {404, "FileNotFound", "no file '" + std::string(name) + "'"};
    case EINVAL: case ENAMETOOLONG: case ELOOP: case ENOTDIR: return {400, "InvalidFileName", message};
    case EISDIR: return {400, "IsADirectory", "'" + std::string(name) + "' is a directory"};
    case ENOSPC: case EDQUOT: return {507, "SessionStorageFull", "the session's /mnt/data is full"};
    case ENOTEMPTY: return {409, "DirectoryNotEmpty", message};
    default: return {500, "FileOperationFailed", message};
  }
}

void respond_agent_error(http::Exchange& ex, const agent::Frame* f, const Error* err, std::string_view name) {
  FileError e = file_error_of(f, err, name);
  respond_error(ex, e.status, e.code, e.message);
}

void write_item(JsonWriter& w, int* next_id, std::string_view path, const agent::FileEntry& e) {
  std::string_view name = path;
  std::string_view dir;
  size_t slash = path.rfind('/');
  if (slash != std::string_view::npos) {
    name = path.substr(slash + 1);
    dir = path.substr(0, slash);
  }
  bool is_dir = e.type == agent::FileType::kDirectory;
  w.begin_object();
  w.key("$id").string(std::to_string((*next_id)++));
  w.key("properties").begin_object();
  w.key("$id").string(std::to_string((*next_id)++));
  w.key("filename").string(path);
  w.key("size").number_u(e.size_bytes);
  w.key("lastModifiedTime").string(iso(e.mtime_ns));
  w.key("last_modified_time").string(iso(e.mtime_ns));
  w.end_object();
  w.key("name").string(name);
  w.key("type").string(is_dir ? "Directory" : "File");
  w.key("contentType").string(is_dir ? std::string_view("inode/directory") : content_type_for(name));
  w.key("sizeInBytes").number_u(e.size_bytes);
  w.key("lastModifiedAt").string(iso(e.mtime_ns));
  w.key("directory").string(dir);
  w.end_object();
}

// Runs `then(session)` with the request's session, or answers the error.
template <class Fn>
void with_session(Files& f, http::Exchange& ex, const RouteParams& params, Where where, Fn then) {
  if (!f.authorize(ex)) return;
  std::string_view name = where.pooled ? params.values[0] : std::string_view("default");
  Pool* p = f.pools.find(name);
  if (!p) return respond_error(ex, 404, "PoolNotFound", "no session pool named '" + std::string(name) + "'");
  auto id = query_param(ex.request().query, "identifier");
  if (!id || !valid_identifier(*id)) return respond_error(ex, 400, "InvalidIdentifier", "a valid 'identifier' query parameter is required");
  p->acquire(*id, [&ex, then](Session* s, const AcquireError* e) {
    if (e) {
      std::string headers;
      if (e->retry_after_seconds) headers = "Retry-After: " + std::to_string(e->retry_after_seconds) + "\r\n";
      return respond_error(ex, e->status, e->code, e->message, headers);
    }
    then(s);
  });
}

// ---- upload (streamed: the body goes to the agent as it arrives) ----

constexpr size_t kUploadChunk = agent::kFileChunkBytes;
constexpr size_t kMaxBufferedUpload = 4 * kUploadChunk;  // past this the body is paused
constexpr int kMaxChunksInFlight = 2;

struct StreamUpload : MultipartStream::Events, std::enable_shared_from_this<StreamUpload> {
  Files* files = nullptr;
  http::Exchange* ex = nullptr;
  bool b_shape = false;
  std::string pool_name;
  std::string identifier;
  std::string dir;
  uint64_t max_bytes = 0;
  std::unique_ptr<MultipartStream> mp;
  // Failure, answered once the body has ended (only then may the exchange be answered).
  int err_status = 0;
  std::string err_code, err_message;
  // The session.
  bool session_ready = false;
  uint64_t session_gen = 0;
  // The file part.
  enum class FilePart { kNone, kIn, kDone } file = FilePart::kNone;
  bool in_other_part = false;
  std::string path;
  bool open_sent = false, opened = false, close_sent = false, aborted = false, answered = false;
  uint64_t upload_id = 0;
  uint64_t received = 0;
  std::string pending;            // data not yet cut into a chunk
  std::deque<std::string> queue;  // chunks waiting to be sent
  size_t queued_bytes = 0;
  int in_flight = 0;
  bool body_done = false;
  bool paused = false;

  void fail(int status, std::string code, std::string message) {
    if (err_status == 0) {
      err_status = status;
      err_code = std::move(code);
      err_message = std::move(message);
    }
    abort_upload();
    queue.clear();
    queued_bytes = 0;
    pending.clear();
    if (paused && !body_done) {
      paused = false;  // the rest of the body is read and discarded, then the error is answered
      ex->resume_body();
    }
    answer_if_done();
  }

  Session* session() {
    Pool* p = files->pools.find(pool_name);
    Session* s = p ? p->find(identifier) : nullptr;
    if (!s || s->sandbox_id() != session_gen) return nullptr;
    return s;
  }

  void abort_upload() {
    if (!opened || close_sent || aborted) return;
    aborted = true;
    if (Session* s = session()) {
      std::string frame;
      agent::FrameEncoder enc(&frame);
      uint64_t id = s->next_request_id();
      if (agent::encode_upload_ref(enc, agent::FrameType::kWriteAbort, id, agent::UploadRef{upload_id}).ok()) {
        s->agent_request(frame, id, [](const agent::Frame*, const Error*) {});
      }
    }
  }

  void answer_if_done() {
    if (!body_done || answered || err_status == 0) return;
    answered = true;
    respond_error(*ex, err_status, err_code, err_message);
  }

  void agent_failed(const agent::Frame* f, const Error* err) {
    FileError e = file_error_of(f, err, path);
    fail(e.status, e.code, e.message);
  }

  // MultipartStream::Events
  void on_part_begin(const MultipartPart& part) override {
    in_other_part = true;
    if (file != FilePart::kNone || part.name != "file" || part.filename.empty()) return;
    auto name = clean_file_name(part.filename, false);
    if (!name) return fail(400, "InvalidFileName", "invalid file name '" + std::string(part.filename) + "'");
    path = dir.empty() ? *name : dir + "/" + *name;
    file = FilePart::kIn;
    in_other_part = false;
  }
  void on_part_data(std::string_view data) override {
    if (file != FilePart::kIn || in_other_part || err_status) return;
    received += data.size();
    if (received > max_bytes) {
      return fail(413, "FileTooLarge", "files are limited to " + std::to_string(max_bytes) + " bytes in this pool");
    }
    pending.append(data);
    while (pending.size() >= kUploadChunk) {
      queue.push_back(pending.substr(0, kUploadChunk));
      queued_bytes += kUploadChunk;
      pending.erase(0, kUploadChunk);
    }
  }
  void on_part_end() override {
    if (file == FilePart::kIn && !in_other_part) {
      if (!pending.empty()) {
        queued_bytes += pending.size();
        queue.push_back(std::move(pending));
        pending.clear();
      }
      file = FilePart::kDone;
    }
    in_other_part = false;
  }

  void flow_control() {
    if (body_done) return;
    size_t buffered = queued_bytes + pending.size();
    if (!paused && buffered > kMaxBufferedUpload) {
      paused = true;
      ex->pause_body();
    } else if (paused && buffered <= kMaxBufferedUpload / 2) {
      paused = false;
      ex->resume_body();
    }
  }

  void pump() {
    if (err_status || !session_ready) return flow_control();
    Session* s = session();
    if (!s) return fail(500, "SessionLost", "the session ended during the upload");
    auto self = shared_from_this();
    if (file != FilePart::kNone && !open_sent) {
      open_sent = true;
      std::string frame;
      agent::FrameEncoder enc(&frame);
      uint64_t id = s->next_request_id();
      if (!agent::encode_write_open(enc, id, agent::WriteOpen{path, 1}).ok()) {
        return fail(400, "InvalidFileName", "file name too long");
      }
      s->agent_request(frame, id, [self](const agent::Frame* f, const Error* err) {
        if (self->err_status) return;
        if (err || f->header.type != agent::FrameType::kOk) return self->agent_failed(f, err);
        auto ok = agent::decode_ok(*f);
        self->upload_id = ok.ok() ? ok.value().value : 0;
        self->opened = true;
        self->pump();
      });
      return flow_control();
    }
    while (opened && !queue.empty() && in_flight < kMaxChunksInFlight) {
      std::string chunk = std::move(queue.front());
      queue.pop_front();
      queued_bytes -= chunk.size();
      std::string frame;
      agent::FrameEncoder enc(&frame);
      uint64_t id = s->next_request_id();
      if (!agent::encode_write_chunk(enc, id, agent::WriteChunk{upload_id, chunk}).ok()) {
        return fail(500, "InternalError", "cannot encode an upload chunk");
      }
      ++in_flight;
      s->agent_request(frame, id, [self](const agent::Frame* f, const Error* err) {
        --self->in_flight;
        if (self->err_status) return;
        if (err || f->header.type != agent::FrameType::kOk) return self->agent_failed(f, err);
        self->pump();
      });
    }
    flow_control();
    if (body_done && opened && file == FilePart::kDone && queue.empty() && in_flight == 0 && !close_sent) {
      close_sent = true;
      std::string frame;
      agent::FrameEncoder enc(&frame);
      uint64_t id = s->next_request_id();
      if (!agent::encode_upload_ref(enc, agent::FrameType::kWriteClose, id, agent::UploadRef{upload_id}).ok()) {
        return fail(500, "InternalError", "cannot encode the upload's end");
      }
      s->agent_request(frame, id, [self](const agent::Frame* f, const Error* err) {
        if (self->err_status) return;
        if (err || f->header.type != agent::FrameType::kOk) return self->agent_failed(f, err);
        auto ok = agent::decode_ok(*f);
        self->stat_and_answer(ok.ok() ? ok.value().value : self->received);
      });
    }
  }

  void stat_and_answer(uint64_t size) {
    Session* s = session();
    if (!s) return fail(500, "SessionLost", "the session ended during the upload");
    auto self = shared_from_this();
    std::string frame;
    agent::FrameEncoder enc(&frame);
    uint64_t id = s->next_request_id();
    if (!agent::encode_path_request(enc, agent::FrameType::kStat, id, agent::PathRequest{path, 0}).ok()) {
      return fail(500, "InternalError", "cannot encode stat");
    }
    s->agent_request(frame, id, [self, size](const agent::Frame* f, const Error* err) {
      if (err || f->header.type != agent::FrameType::kStatReply) return self->agent_failed(f, err);
      auto list = agent::decode_list_reply(*f);
      agent::FileEntry e{self->path, agent::FileType::kFile, size, pool::unix_now_ms() * 1000000};
      if (list.ok() && !list.value().entries.empty()) e = list.value().entries[0];
      e.size_bytes = size;
      std::string body;
      JsonWriter w(body);
      int next_id = 1;
      if (self->b_shape) {
        w.begin_object().key("$id").string(std::to_string(next_id++)).key("value").begin_array();
        write_item(w, &next_id, self->path, e);
        w.end_array().end_object();
      } else {
        write_item(w, &next_id, self->path, e);
      }
      self->answered = true;
      self->ex->respond(200, kJson, body);
    });
  }
};

struct Uploads {
  std::unordered_map<http::Exchange*, std::shared_ptr<StreamUpload>> active;
};

void upload_head(Files& files, Uploads& uploads, http::Exchange& ex, const RouteParams& params, Where where,
                 bool b_shape) {
  auto u = std::make_shared<StreamUpload>();
  u->files = &files;
  u->ex = &ex;
  u->b_shape = b_shape;
  uploads.active[&ex] = u;
  const http::Request& req = ex.request();
  if (!files.authorize_quiet(ex)) {
    return u->fail(401, "Unauthorized", "a valid 'Authorization: Bearer <key>' header is required");
  }
  u->pool_name = std::string(where.pooled ? params.values[0] : std::string_view("default"));
  Pool* p = files.pools.find(u->pool_name);
  if (!p) return u->fail(404, "PoolNotFound", "no session pool named '" + u->pool_name + "'");
  u->max_bytes = p->settings().max_upload_bytes;
  auto id = query_param(req.query, "identifier");
  if (!id || !valid_identifier(*id)) return u->fail(400, "InvalidIdentifier", "a valid 'identifier' query parameter is required");
  u->identifier = *id;
  if (auto path = query_param(req.query, "path")) {
    auto clean = clean_file_name(*path, true);
    if (!clean) return u->fail(400, "InvalidFileName", "invalid path '" + *path + "'");
    u->dir = *clean;
  }
  auto boundary = multipart_boundary(req.header("content-type"));
  if (!boundary.ok()) return u->fail(400, "InvalidRequestBody", "uploads are multipart/form-data with a part named 'file'");
  u->mp = std::make_unique<MultipartStream>(boundary.value(), u.get());
  p->acquire(u->identifier, [u](Session* s, const AcquireError* e) {
    if (e) return u->fail(e->status, e->code, e->message);
    u->session_gen = s->sandbox_id();
    u->session_ready = true;
    u->pump();
  });
}

void upload_body(Uploads& uploads, http::Exchange& ex, std::string_view chunk) {
  auto it = uploads.active.find(&ex);
  if (it == uploads.active.end()) return;
  StreamUpload& u = *it->second;
  if (u.err_status || !u.mp) return;  // discard: the error is answered at the end
  Status st = u.mp->feed(chunk);
  if (!st.ok()) return u.fail(400, "InvalidRequestBody", "malformed multipart body: " + std::string(st.error().where));
  u.pump();
}

void upload_end(Uploads& uploads, http::Exchange& ex) {
  auto it = uploads.active.find(&ex);
  if (it == uploads.active.end()) return respond_error(ex, 500, "InternalError", "upload state lost");
  std::shared_ptr<StreamUpload> u = it->second;
  uploads.active.erase(it);
  u->body_done = true;
  if (u->paused) {
    u->paused = false;
    ex.resume_body();
  }
  if (!u->err_status && u->mp && !u->mp->finish().ok()) {
    return u->fail(400, "InvalidRequestBody", "malformed multipart body: it ends before the closing boundary");
  }
  if (!u->err_status && u->file == StreamUpload::FilePart::kNone) {
    return u->fail(400, "InvalidRequestBody", "no part named 'file' with a filename");
  }
  if (u->err_status) return u->answer_if_done();
  u->pump();
}

void upload_abort(Uploads& uploads, http::Exchange& ex) {
  auto it = uploads.active.find(&ex);
  if (it == uploads.active.end()) return;
  std::shared_ptr<StreamUpload> u = it->second;
  uploads.active.erase(it);
  u->answered = true;  // nobody to answer (or the HTTP layer answers the error itself)
  u->err_status = u->err_status ? u->err_status : 499;
  u->abort_upload();
}

// ---- list, stat, delete ----

void handle_list(Files& files, http::Exchange& ex, const RouteParams& params, Where where) {
  std::string dir;
  if (auto path = query_param(ex.request().query, "path")) {
    auto clean = clean_file_name(*path, true);
    if (!clean) return respond_error(ex, 400, "InvalidFileName", "invalid path '" + *path + "'");
    dir = *clean;
  }
  auto rec = query_param(ex.request().query, "recursive");
  bool recursive = rec && (*rec == "true" || *rec == "1" || *rec == "True");
  with_session(files, ex, params, where, [&ex, dir, recursive](Session* s) {
    std::string frame;
    agent::FrameEncoder enc(&frame);
    uint64_t id = s->next_request_id();
    if (!agent::encode_path_request(enc, agent::FrameType::kListDir, id, agent::PathRequest{dir, recursive ? uint8_t{1} : uint8_t{0}}).ok()) {
      return respond_error(ex, 400, "InvalidFileName", "path too long");
    }
    s->agent_request(frame, id, [&ex, dir](const agent::Frame* f, const Error* err) {
      if (err || f->header.type != agent::FrameType::kListReply) return respond_agent_error(ex, f, err, dir);
      auto list = agent::decode_list_reply(*f);
      if (!list.ok()) return respond_error(ex, 500, "InternalError", "malformed listing from the agent");
      std::string body;
      JsonWriter w(body);
      int next_id = 1;
      w.begin_object().key("$id").string(std::to_string(next_id++)).key("value").begin_array();
      for (const agent::FileEntry& e : list.value().entries) {
        std::string path = dir.empty() ? std::string(e.name) : dir + "/" + std::string(e.name);
        write_item(w, &next_id, path, e);
      }
      w.end_array().key("nextLink").null().end_object();
      ex.respond(200, kJson, body);
    });
  });
}

std::optional<std::string> name_param(http::Exchange& ex, std::string_view raw) {
  auto decoded = percent_decode(raw);
  auto clean = decoded ? clean_file_name(*decoded, false) : std::nullopt;
  if (!clean) respond_error(ex, 400, "InvalidFileName", "invalid file name '" + std::string(raw) + "'");
  return clean;
}

// One path request (stat or delete) to the session's agent; `on_ok` forms the answer from the
// reply when it has the expected type.
template <class OnOk>
void path_request(Files& files, http::Exchange& ex, const RouteParams& params, Where where, agent::FrameType type,
                  agent::FrameType reply_type, OnOk on_ok) {
  auto name = name_param(ex, params.values[where.pooled ? 1 : 0]);
  if (!name) return;
  with_session(files, ex, params, where, [&ex, path = *name, type, reply_type, on_ok](Session* s) {
    std::string frame;
    agent::FrameEncoder enc(&frame);
    uint64_t id = s->next_request_id();
    if (!agent::encode_path_request(enc, type, id, agent::PathRequest{path, 0}).ok()) {
      return respond_error(ex, 400, "InvalidFileName", "name too long");
    }
    s->agent_request(frame, id, [&ex, path, reply_type, on_ok](const agent::Frame* f, const Error* err) {
      if (err || f->header.type != reply_type) return respond_agent_error(ex, f, err, path);
      on_ok(ex, path, *f);
    });
  });
}

void handle_stat(Files& files, http::Exchange& ex, const RouteParams& params, Where where) {
  path_request(files, ex, params, where, agent::FrameType::kStat, agent::FrameType::kStatReply,
               [](http::Exchange& ex, const std::string& path, const agent::Frame& f) {
                 auto list = agent::decode_list_reply(f);
                 if (!list.ok() || list.value().entries.empty()) return respond_error(ex, 500, "InternalError", "malformed stat");
                 std::string body;
                 JsonWriter w(body);
                 int next_id = 1;
                 write_item(w, &next_id, path, list.value().entries[0]);
                 ex.respond(200, kJson, body);
               });
}

void handle_delete(Files& files, http::Exchange& ex, const RouteParams& params, Where where) {
  path_request(files, ex, params, where, agent::FrameType::kDelete, agent::FrameType::kOk,
               [](http::Exchange& ex, const std::string&, const agent::Frame&) { ex.respond(204, {}, {}); });
}

// ---- content (streamed: one chunk in flight, paced by the client's reading) ----

struct Download : std::enable_shared_from_this<Download> {
  Files* files = nullptr;
  http::Exchange* ex = nullptr;
  std::string pool_name, identifier, path;
  uint64_t session_gen = 0;
  uint64_t size = 0;
  uint64_t sent = 0;
  bool started = false;

  Session* session() {
    Pool* p = files->pools.find(pool_name);
    Session* s = p ? p->find(identifier) : nullptr;
    return s && s->sandbox_id() == session_gen ? s : nullptr;
  }

  void fail_midway() { ex->fail_stream(); }

  void next() {
    if (started && (ex->peer_gone() || sent >= size)) {
      if (ex->peer_gone()) return ex->fail_stream();
      return ex->end_stream();
    }
    Session* s = session();
    if (!s) {
      if (started) return fail_midway();
      return respond_error(*ex, 500, "SessionLost", "the session ended");
    }
    std::string frame;
    agent::FrameEncoder enc(&frame);
    uint64_t id = s->next_request_id();
    uint32_t want = agent::kFileChunkBytes * 4;
    if (started) want = static_cast<uint32_t>(std::min<uint64_t>(want, size - sent));
    if (!agent::encode_read_file(enc, id, agent::ReadFileRequest{path, sent, want}).ok()) {
      return respond_error(*ex, 400, "InvalidFileName", "name too long");
    }
    auto self = shared_from_this();
    s->agent_request(frame, id, [self](const agent::Frame* f, const Error* err) { self->on_chunk(f, err); });
  }

  void on_chunk(const agent::Frame* f, const Error* err) {
    if (err || f->header.type != agent::FrameType::kFileData) {
      if (started) return fail_midway();
      return respond_agent_error(*ex, f, err, path);
    }
    auto fd = agent::decode_file_data(*f);
    if (!fd.ok()) return started ? fail_midway() : respond_error(*ex, 500, "InternalError", "malformed file data");
    std::string_view data = fd.value().data;
    if (!started) {
      started = true;
      size = fd.value().file_size;
      char date[29];
      http::format_http_date(fd.value().mtime_ns / 1000000000, date);
      std::string headers = "Last-Modified: " + std::string(date, sizeof date) + "\r\n";
      std::string_view base = std::string_view(path).substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
      ex->begin_stream(200, content_type_for(base), size, headers);
    }
    if (data.size() > size - sent) data = data.substr(0, size - sent);  // the file grew: send what was announced
    if (data.empty() && sent < size) return fail_midway();               // the file shrank
    ex->stream_write(data);
    sent += data.size();
    auto self = shared_from_this();
    ex->on_drained([self] { self->next(); });
  }
};

void handle_content(Files& files, http::Exchange& ex, const RouteParams& params, Where where) {
  auto name = name_param(ex, params.values[where.pooled ? 1 : 0]);
  if (!name) return;
  Files* fp = &files;
  std::string pool_name(where.pooled ? params.values[0] : std::string_view("default"));
  with_session(files, ex, params, where, [&ex, fp, pool_name, path = *name](Session* s) {
    auto d = std::make_shared<Download>();
    d->files = fp;
    d->ex = &ex;
    d->pool_name = pool_name;
    d->identifier = s->identifier();
    d->session_gen = s->sandbox_id();
    d->path = path;
    d->next();
  });
}

}  // namespace

std::optional<std::string> clean_file_name(std::string_view raw, bool allow_root) {
  if (raw == "/mnt/data") raw = "";
  if (raw.substr(0, 10) == "/mnt/data/") raw.remove_prefix(10);
  if (!raw.empty() && raw.front() == '/') return std::nullopt;
  if (raw.find('\0') != std::string_view::npos || raw.size() > 4096) return std::nullopt;
  std::string out;
  while (!raw.empty()) {
    size_t slash = raw.find('/');
    std::string_view c = raw.substr(0, slash);
    if (c == "..") return std::nullopt;
    if (c.size() > 255) return std::nullopt;
    if (!c.empty() && c != ".") {
      if (!out.empty()) out += '/';
      out += c;
    }
    if (slash == std::string_view::npos) break;
    raw.remove_prefix(slash + 1);
  }
  if (out.empty() && !allow_root) return std::nullopt;
  return out;
}

std::string_view content_type_for(std::string_view name) {
  static const std::pair<std::string_view, std::string_view> kTypes[] = {
      {".csv", "text/csv"},          {".txt", "text/plain; charset=utf-8"}, {".json", "application/json"},
      {".png", "image/png"},         {".jpg", "image/jpeg"},                {".jpeg", "image/jpeg"},
      {".gif", "image/gif"},         {".svg", "image/svg+xml"},             {".html", "text/html"},
      {".py", "text/x-python"},      {".md", "text/markdown"},              {".pdf", "application/pdf"},
      {".xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
      {".zip", "application/zip"},   {".parquet", "application/vnd.apache.parquet"},
  };
  size_t dot = name.rfind('.');
  if (dot != std::string_view::npos) {
    std::string ext(name.substr(dot));
    for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    for (const auto& [e, t] : kTypes) {
      if (ext == e) return t;
    }
  }
  return "application/octet-stream";
}

void add_file_routes(Api& api, pool::PoolManager& pools, std::function<bool(http::Exchange&)> authorize,
                     std::vector<std::string> api_keys) {
  auto files = std::make_shared<Files>(Files{pools, std::move(authorize), std::move(api_keys)});
  auto uploads = std::make_shared<Uploads>();
  for (Where where : {Where{true}, Where{false}}) {
    // The pool's upload limit plus room for the multipart framing, decided from the request head.
    RouteOptions upload_opts;
    upload_opts.too_large_code = "FileTooLarge";
    upload_opts.body_limit = [files, where](const http::Request& req) -> uint64_t {
      std::string_view name = where.pooled ? req.route_params[0] : std::string_view("default");
      Pool* p = files->pools.find(name);
      return (p ? p->settings().max_upload_bytes : pool::PoolSettings{}.max_upload_bytes) + (64 << 10);
    };
    std::string base = where.pooled ? "/pools/{pool}/" : "/";
    auto reg = [&](llhttp_method_t m, const char* suffix, auto fn, RouteOptions o = {}) {
      api.register_route(m, base + suffix, [files, where, fn](http::Exchange& ex, const RouteParams& p) { fn(*files, ex, p, where); }, o);
    };
    for (bool b_shape : {true, false}) {
      RouteOptions o = upload_opts;
      o.stream_head = [files, uploads, where, b_shape](http::Exchange& ex, const RouteParams& p) {
        upload_head(*files, *uploads, ex, p, where, b_shape);
      };
      o.stream_body = [uploads](http::Exchange& ex, std::string_view chunk) { upload_body(*uploads, ex, chunk); };
      o.stream_abort = [uploads](http::Exchange& ex) { upload_abort(*uploads, ex); };
      api.register_route(HTTP_POST, base + (b_shape ? "files/upload" : "files"),
                         [uploads](http::Exchange& ex, const RouteParams&) { upload_end(*uploads, ex); }, o);
    }
    reg(HTTP_GET, "files", handle_list);
    reg(HTTP_GET, "files/content/{name...}", handle_content);
    reg(HTTP_GET, "files/{name}/content", handle_content);
    reg(HTTP_GET, "files/{name}", handle_stat);
    reg(HTTP_DELETE, "files/{name}", handle_delete);
  }
}

}  // namespace sp::api
