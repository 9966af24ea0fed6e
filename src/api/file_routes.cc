// File handlers: each turns one HTTP request into a short conversation with the session's agent.
#include "api/file_routes.h"

#include <memory>

#include "agent/protocol.h"
#include "api/errors.h"
#include "api/json.h"
#include "api/multipart.h"
#include "api/params.h"
#include "http/response.h"

namespace sp::api {
namespace {

using pool::AcquireError;
using pool::Pool;
using pool::Session;

constexpr const char* kJson = "application/json; charset=utf-8";
constexpr uint64_t kMaxDownloadBytes = 1ull << 30;  // answers are formed whole for now

struct Files {
  pool::PoolManager& pools;
  std::function<bool(http::Exchange&)> authorize;
};

struct Where {
  bool pooled;
};

std::string iso(int64_t mtime_ns) { return pool::format_iso8601_ms(mtime_ns / 1000000); }

void respond_agent_error(http::Exchange& ex, const agent::Frame* f, const Error* err, std::string_view name) {
  if (err) {
    respond_error(ex, 500, "SessionLost", "the session's sandbox did not answer: " + err->message());
    return;
  }
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
    case ENOENT: respond_error(ex, 404, "FileNotFound", "no file '" + std::string(name) + "'"); break;
    case EINVAL: case ENAMETOOLONG: case ELOOP: case ENOTDIR:
      respond_error(ex, 400, "InvalidFileName", message);
      break;
    case EISDIR: respond_error(ex, 400, "IsADirectory", "'" + std::string(name) + "' is a directory"); break;
    case ENOSPC: case EDQUOT:
      respond_error(ex, 507, "SessionStorageFull", "the session's /mnt/data is full");
      break;
    case ENOTEMPTY: respond_error(ex, 409, "DirectoryNotEmpty", message); break;
    default: respond_error(ex, 500, "FileOperationFailed", message); break;
  }
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

// ---- upload ----

struct Upload {
  http::Exchange* ex;
  Session* session;
  std::string path;
  std::string_view data;  // into the request body, valid until the answer
  size_t sent = 0;
  uint64_t upload_id = 0;
  bool b_shape = false;  // files/upload (B envelope list) vs files (C object)
};

void upload_step(std::shared_ptr<Upload> u);

void upload_finish(std::shared_ptr<Upload> u, uint64_t size) {
  // Stat for the modification time the listing will show.
  std::string frame;
  agent::FrameEncoder enc(&frame);
  uint64_t id = u->session->next_request_id();
  agent::PathRequest pr{u->path, 0};
  if (!agent::encode_path_request(enc, agent::FrameType::kStat, id, pr).ok()) {
    return respond_error(*u->ex, 500, "InternalError", "cannot encode stat");
  }
  u->session->agent_request(frame, id, [u, size](const agent::Frame* f, const Error* err) {
    if (err || f->header.type != agent::FrameType::kStatReply) return respond_agent_error(*u->ex, f, err, u->path);
    auto list = agent::decode_list_reply(*f);
    agent::FileEntry e{u->path, agent::FileType::kFile, size, pool::unix_now_ms() * 1000000};
    if (list.ok() && !list.value().entries.empty()) e = list.value().entries[0];
    e.size_bytes = size;
    std::string body;
    JsonWriter w(body);
    int next_id = 1;
    if (u->b_shape) {
      w.begin_object().key("$id").string(std::to_string(next_id++)).key("value").begin_array();
      write_item(w, &next_id, u->path, e);
      w.end_array().end_object();
    } else {
      write_item(w, &next_id, u->path, e);
    }
    u->ex->respond(200, kJson, body);
  });
}

void upload_step(std::shared_ptr<Upload> u) {
  std::string frame;
  agent::FrameEncoder enc(&frame);
  uint64_t id = u->session->next_request_id();
  bool last = u->sent >= u->data.size();
  Status st;
  if (last) {
    st = agent::encode_upload_ref(enc, agent::FrameType::kWriteClose, id, agent::UploadRef{u->upload_id});
  } else {
    size_t n = std::min<size_t>(agent::kFileChunkBytes, u->data.size() - u->sent);
    st = agent::encode_write_chunk(enc, id, agent::WriteChunk{u->upload_id, u->data.substr(u->sent, n)});
    u->sent += n;
  }
  if (!st.ok()) return respond_error(*u->ex, 500, "InternalError", "cannot encode upload");
  u->session->agent_request(frame, id, [u, last](const agent::Frame* f, const Error* err) {
    if (err || f->header.type != agent::FrameType::kOk) {
      if (!err && !last) {
        // Drop the partial file; the answer reports the first failure.
        std::string abort;
        agent::FrameEncoder enc(&abort);
        uint64_t aid = u->session->next_request_id();
        if (agent::encode_upload_ref(enc, agent::FrameType::kWriteAbort, aid, agent::UploadRef{u->upload_id}).ok()) {
          u->session->agent_request(abort, aid, [](const agent::Frame*, const Error*) {});
        }
      }
      return respond_agent_error(*u->ex, f, err, u->path);
    }
    if (last) {
      auto ok = agent::decode_ok(*f);
      return upload_finish(u, ok.ok() ? ok.value().value : u->data.size());
    }
    upload_step(u);
  });
}

void handle_upload(Files& files, http::Exchange& ex, const RouteParams& params, Where where, bool b_shape) {
  const http::Request& req = ex.request();
  auto boundary = multipart_boundary(req.header("content-type"));
  if (!boundary.ok()) return respond_error(ex, 400, "InvalidRequestBody", "uploads are multipart/form-data with a part named 'file'");
  auto parts = parse_multipart(req.body, boundary.value());
  if (!parts.ok()) return respond_error(ex, 400, "InvalidRequestBody", "malformed multipart body: " + std::string(parts.error().where));
  const MultipartPart* file = nullptr;
  for (const MultipartPart& p : parts.value()) {
    if (p.name == "file" && !p.filename.empty()) file = &p;
  }
  if (!file) return respond_error(ex, 400, "InvalidRequestBody", "no part named 'file' with a filename");
  std::string dir;
  if (auto path = query_param(req.query, "path")) {
    auto clean = clean_file_name(*path, true);
    if (!clean) return respond_error(ex, 400, "InvalidFileName", "invalid path '" + *path + "'");
    dir = *clean;
  }
  auto name = clean_file_name(file->filename, false);
  if (!name) return respond_error(ex, 400, "InvalidFileName", "invalid file name '" + std::string(file->filename) + "'");
  std::string full = dir.empty() ? *name : dir + "/" + *name;
  std::string_view pool_name = where.pooled ? params.values[0] : std::string_view("default");
  Pool* p = files.pools.find(pool_name);
  if (p && file->data.size() > p->settings().max_upload_bytes) {
    return respond_error(ex, 413, "FileTooLarge",
                         "files are limited to " + std::to_string(p->settings().max_upload_bytes) + " bytes in this pool");
  }
  std::string_view data = file->data;
  with_session(files, ex, params, where, [&ex, full, data, b_shape](Session* s) {
    auto u = std::make_shared<Upload>();
    u->ex = &ex;
    u->session = s;
    u->path = full;
    u->data = data;
    u->b_shape = b_shape;
    std::string frame;
    agent::FrameEncoder enc(&frame);
    uint64_t id = s->next_request_id();
    if (!agent::encode_write_open(enc, id, agent::WriteOpen{u->path, 1}).ok()) {
      return respond_error(ex, 400, "InvalidFileName", "file name too long");
    }
    s->agent_request(frame, id, [u](const agent::Frame* f, const Error* err) {
      if (err || f->header.type != agent::FrameType::kOk) return respond_agent_error(*u->ex, f, err, u->path);
      auto ok = agent::decode_ok(*f);
      u->upload_id = ok.ok() ? ok.value().value : 0;
      upload_step(u);
    });
  });
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

void handle_stat(Files& files, http::Exchange& ex, const RouteParams& params, Where where) {
  auto name = name_param(ex, params.values[where.pooled ? 1 : 0]);
  if (!name) return;
  with_session(files, ex, params, where, [&ex, path = *name](Session* s) {
    std::string frame;
    agent::FrameEncoder enc(&frame);
    uint64_t id = s->next_request_id();
    if (!agent::encode_path_request(enc, agent::FrameType::kStat, id, agent::PathRequest{path, 0}).ok()) {
      return respond_error(ex, 400, "InvalidFileName", "name too long");
    }
    s->agent_request(frame, id, [&ex, path](const agent::Frame* f, const Error* err) {
      if (err || f->header.type != agent::FrameType::kStatReply) return respond_agent_error(ex, f, err, path);
      auto list = agent::decode_list_reply(*f);
      if (!list.ok() || list.value().entries.empty()) return respond_error(ex, 500, "InternalError", "malformed stat");
      std::string body;
      JsonWriter w(body);
      int next_id = 1;
      write_item(w, &next_id, path, list.value().entries[0]);
      ex.respond(200, kJson, body);
    });
  });
}

void handle_delete(Files& files, http::Exchange& ex, const RouteParams& params, Where where) {
  auto name = name_param(ex, params.values[where.pooled ? 1 : 0]);
  if (!name) return;
  with_session(files, ex, params, where, [&ex, path = *name](Session* s) {
    std::string frame;
    agent::FrameEncoder enc(&frame);
    uint64_t id = s->next_request_id();
    if (!agent::encode_path_request(enc, agent::FrameType::kDelete, id, agent::PathRequest{path, 0}).ok()) {
      return respond_error(ex, 400, "InvalidFileName", "name too long");
    }
    s->agent_request(frame, id, [&ex, path](const agent::Frame* f, const Error* err) {
      if (err || f->header.type != agent::FrameType::kOk) return respond_agent_error(ex, f, err, path);
      ex.respond(204, {}, {});
    });
  });
}

// ---- content ----

struct Download {
  http::Exchange* ex;
  Session* session;
  std::string path;
  std::string data;
  int64_t mtime_ns = 0;
};

void download_step(std::shared_ptr<Download> d) {
  std::string frame;
  agent::FrameEncoder enc(&frame);
  uint64_t id = d->session->next_request_id();
  if (!agent::encode_read_file(enc, id, agent::ReadFileRequest{d->path, d->data.size(), agent::kFileChunkBytes * 4}).ok()) {
    return respond_error(*d->ex, 400, "InvalidFileName", "name too long");
  }
  d->session->agent_request(frame, id, [d](const agent::Frame* f, const Error* err) {
    if (err || f->header.type != agent::FrameType::kFileData) return respond_agent_error(*d->ex, f, err, d->path);
    auto fd = agent::decode_file_data(*f);
    if (!fd.ok()) return respond_error(*d->ex, 500, "InternalError", "malformed file data");
    if (fd.value().file_size > kMaxDownloadBytes) {
      return respond_error(*d->ex, 413, "FileTooLarge", "files over 1 GiB cannot be downloaded yet");
    }
    if (d->data.empty()) d->data.reserve(fd.value().file_size);
    d->data += fd.value().data;
    d->mtime_ns = fd.value().mtime_ns;
    if (!fd.value().eof && !fd.value().data.empty()) return download_step(d);
    char date[29];
    http::format_http_date(d->mtime_ns / 1000000000, date);
    std::string headers = "Last-Modified: " + std::string(date, sizeof date) + "\r\n";
    std::string_view base = d->path.substr(d->path.rfind('/') == std::string::npos ? 0 : d->path.rfind('/') + 1);
    d->ex->respond(200, content_type_for(base), d->data, headers);
  });
}

void handle_content(Files& files, http::Exchange& ex, const RouteParams& params, Where where) {
  auto name = name_param(ex, params.values[where.pooled ? 1 : 0]);
  if (!name) return;
  with_session(files, ex, params, where, [&ex, path = *name](Session* s) {
    auto d = std::make_shared<Download>();
    d->ex = &ex;
    d->session = s;
    d->path = path;
    download_step(d);
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

void add_file_routes(Api& api, pool::PoolManager& pools, std::function<bool(http::Exchange&)> authorize) {
  auto files = std::make_shared<Files>(Files{pools, std::move(authorize)});
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
    reg(HTTP_POST, "files/upload", [](Files& f, http::Exchange& ex, const RouteParams& p, Where w) { handle_upload(f, ex, p, w, true); }, upload_opts);
    reg(HTTP_POST, "files", [](Files& f, http::Exchange& ex, const RouteParams& p, Where w) { handle_upload(f, ex, p, w, false); }, upload_opts);
    reg(HTTP_GET, "files", handle_list);
    reg(HTTP_GET, "files/content/{name...}", handle_content);
    reg(HTTP_GET, "files/{name}/content", handle_content);
    reg(HTTP_GET, "files/{name}", handle_stat);
    reg(HTTP_DELETE, "files/{name}", handle_delete);
  }
}

}  // namespace sp::api
