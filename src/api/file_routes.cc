// File handlers: each turns one HTTP request into a short conversation with the session's agent.
#include "api/file_routes.h"

#include <memory>

#include "api/file_common.h"
#include "http/response.h"

namespace sp::api {
namespace files {
namespace {

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
      return respond_error(*ex, kSessionEndedStatus, kSessionEnded, "the session ended");
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
}  // namespace files

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

void add_file_routes(Api& api, pool::PoolManager& pools) {
  using namespace files;
  auto files = std::make_shared<Files>(Files{pools});
  std::shared_ptr<Uploads> uploads = make_uploads();
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
