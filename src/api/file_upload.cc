// Streamed multipart uploads: the body goes to the session's agent as it arrives, with flow
// control, so the server never holds the file.
#include <deque>
#include <unordered_map>

#include "api/file_common.h"
#include "api/multipart.h"

namespace sp::api::files {
namespace {


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
  std::string err_code, err_message, err_headers;
  // The session: acquired once the body has shown a valid file part, so that a body that never
  // does (not multipart, no part named 'file', a bad name) allocates nothing; one this upload
  // allocated ends again when the body turns out bad later (cut short, too large).
  bool acquiring = false, session_ready = false, created_session = false;
  uint64_t session_gen = 0;
  // The file part.
  enum class FilePart { kNone, kIn, kDone } file = FilePart::kNone;
  bool in_other_part = false;
  std::string path;
  bool open_sent = false, opened = false, close_sent = false, aborted = false, answered = false;
  bool open_waiting = false;  // the open's reply has not come: an error answer waits for it
  uint64_t upload_id = 0;
  uint64_t received = 0;
  std::string pending;            // data not yet cut into a chunk
  std::deque<std::string> queue;  // chunks waiting to be sent
  size_t queued_bytes = 0;
  int in_flight = 0;
  bool body_done = false;
  bool paused = false;

  void fail(int status, std::string code, std::string message, std::string headers = {}) {
    if (err_status == 0) {
      err_status = status;
      err_code = std::move(code);
      err_message = std::move(message);
      err_headers = std::move(headers);
    }
    if (!end_if_allocated_for_bad_input()) abort_upload();
    queue.clear();
    queued_bytes = 0;
    pending.clear();
    if (paused && !body_done) {
      paused = false;  // the rest of the body is read and discarded, then the error is answered
      ex->resume_body();
    }
    answer_if_done();
  }

  // Bad input allocates nothing: a session this upload allocated ends when the upload fails for
  // its body (400, 413); the file being written goes with its sandbox. True when it did.
  bool end_if_allocated_for_bad_input() {
    if (!created_session || (err_status != 400 && err_status != 413)) return false;
    created_session = false;
    Session* s = session();
    if (!s) return false;
    s->destroy("its first request, an upload, was bad input");
    return true;
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
    // After the open's reply, so that the abort of what it opened goes to the agent before the
    // client, answered, can send the session anything else.
    if (!body_done || answered || err_status == 0 || open_waiting) return;
    answered = true;
    respond_error(*ex, err_status, err_code, err_message, err_headers);
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
    acquire();
  }

  void acquire() {
    if (acquiring || err_status) return;
    acquiring = true;
    Pool* p = files->pools.find(pool_name);
    if (!p) return fail(404, "PoolNotFound", "no session pool named '" + pool_name + "'");
    const bool is_new = p->find(identifier) == nullptr;
    p->acquire(identifier, [self = shared_from_this(), is_new](Session* s, const AcquireError* e) {
      if (e) return self->fail(e->status, e->code, e->message, e->retry_after_header());
      self->session_gen = s->sandbox_id();
      self->session_ready = true;
      self->created_session = is_new;
      if (self->err_status) {  // the body failed while the session was on its way
        self->end_if_allocated_for_bad_input();
        return;
      }
      self->pump();
    });
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
    if (!s) return fail(kSessionEndedStatus, kSessionEnded, "the session ended during the upload");
    auto self = shared_from_this();
    if (file != FilePart::kNone && !open_sent) {
      open_sent = true;
      std::string frame;
      agent::FrameEncoder enc(&frame);
      uint64_t id = s->next_request_id();
      if (!agent::encode_write_open(enc, id, agent::WriteOpen{path, 1}).ok()) {
        return fail(400, "InvalidFileName", "file name too long");
      }
      open_waiting = true;
      s->agent_request(frame, id, [self](const agent::Frame* f, const Error* err) {
        self->open_waiting = false;
        const bool ok_frame = !err && f->header.type == agent::FrameType::kOk;
        if (ok_frame) {
          auto ok = agent::decode_ok(*f);
          self->upload_id = ok.ok() ? ok.value().value : 0;
          self->opened = true;
        }
        // Failed while the open was on its way (the body cut short, the client gone): the agent's
        // temporary file would stay in /mnt/data; abort it now that it has an id, then answer.
        if (self->err_status) {
          self->abort_upload();
          return self->answer_if_done();
        }
        if (!ok_frame) return self->agent_failed(f, err);
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
    if (!s) return fail(kSessionEndedStatus, kSessionEnded, "the session ended during the upload");
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

}  // namespace

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
  // The session is acquired when the body shows its file part (StreamUpload::acquire).
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

std::shared_ptr<Uploads> make_uploads() { return std::make_shared<Uploads>(); }

}  // namespace sp::api::files
