// Internal to the files routes (file_routes.cc, file_upload.cc): shared types and helpers.
// Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/protocol.h"
#include "api/errors.h"
#include "api/file_routes.h"
#include "api/json.h"
#include "api/params.h"
#include "api/router.h"
#include "api/session_routes.h"
#include "http/handler.h"
#include "pool/pool_manager.h"

namespace sp::api::files {


using pool::AcquireError;
using pool::Pool;
using pool::Session;

inline constexpr const char* kJson = "application/json; charset=utf-8";

struct Files {
  pool::PoolManager& pools;
};

struct Where {
  bool pooled;
};

inline std::string iso(int64_t mtime_ns) { return pool::format_iso8601_ms(mtime_ns / 1000000); }

// The answer for a failed file operation: the agent's errno mapped to API.md's statuses.
struct FileError {
  int status;
  const char* code;
  std::string message;
};

inline FileError file_error_of(const agent::Frame* f, const Error* err, std::string_view name) {
  if (err && err->code == ECANCELED)
    return {kSessionEndedStatus, kSessionEnded, "the session ended (deleted or stopped) before this request was answered"};
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

inline void respond_agent_error(http::Exchange& ex, const agent::Frame* f, const Error* err, std::string_view name) {
  FileError e = file_error_of(f, err, name);
  respond_error(ex, e.status, e.code, e.message);
}

inline void write_item(JsonWriter& w, int* next_id, std::string_view path, const agent::FileEntry& e) {
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

// Runs `then(session)` with the request's session, or answers the error. (Api answered a request
// without a valid key before any route saw it: API.md §1, such a client is told nothing else.)
template <class Fn>
void with_session(Files& f, http::Exchange& ex, const RouteParams& params, Where where, Fn then) {
  std::string_view name = where.pooled ? params.values[0] : std::string_view("default");
  Pool* p = f.pools.find(name);
  if (!p) return respond_error(ex, 404, "PoolNotFound", "no session pool named '" + std::string(name) + "'");
  auto id = query_param(ex.request().query, "identifier");
  if (!id || !valid_identifier(*id)) return respond_error(ex, 400, "InvalidIdentifier", "a valid 'identifier' query parameter is required");
  p->acquire(*id, [&ex, then](Session* s, const AcquireError* e) {
    if (e) return respond_error(ex, e->status, e->code, e->message, e->retry_after_header());
    then(s);
  });
}

// Streamed uploads (file_upload.cc): per-exchange state between the head, the body and its end.
struct Uploads;
std::shared_ptr<Uploads> make_uploads();
void upload_head(Files& files, Uploads& uploads, http::Exchange& ex, const RouteParams& params, Where where,
                 bool b_shape);
void upload_body(Uploads& uploads, http::Exchange& ex, std::string_view chunk);
void upload_end(Uploads& uploads, http::Exchange& ex);
void upload_abort(Uploads& uploads, http::Exchange& ex);

}  // namespace sp::api::files
