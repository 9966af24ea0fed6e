// The OpenAPI document: paths from the router, a summary per route suffix.
#include "api/openapi.h"

#include <map>

#include "api/json.h"

namespace sp::api {
namespace {

struct Doc {
  std::string_view suffix;  // the route's path after the pool endpoint (or the whole path)
  std::string_view method;  // "" = any
  std::string_view summary;
};

const Doc kDocs[] = {
    {"/healthz", "", "Liveness: 200 while the process serves."},
    {"/readyz", "", "Readiness: 503 while starting or draining."},
    {"/metrics", "", "Prometheus text metrics."},
    {"/openapi.json", "", "This document."},
    {"/pools", "GET", "List pools with their settings."},
    {"/pools", "POST", "Create a pool (settings as in API.md section 5)."},
    {"/pools/{pool}", "GET", "Show a pool."},
    {"/pools/{pool}", "PUT", "Update a pool's settings."},
    {"/pools/{pool}", "PATCH", "Update a pool's settings."},
    {"/pools/{pool}", "DELETE", "Delete a pool and end its sessions."},
    {"code/execute", "", "Run code in the session of ?identifier=; answers envelope B."},
    {"execute", "", "Alias of code/execute."},
    {"python/execute", "", "Legacy: run code; answers {result, stdout, stderr}."},
    {"executions", "", "Run code (Synchronous or Asynchronous); answers an execution resource."},
    {"executions/{id}", "", "An execution resource."},
    {"files/upload", "", "Upload a file (multipart part 'file'); answers a B-files list."},
    {"files", "POST", "Upload a file (multipart part 'file', optional ?path=); answers a file object."},
    {"files", "GET", "List files (?path=, ?recursive=true), both client families' fields."},
    {"files/content/{name}", "", "A file's bytes (nested names allowed)."},
    {"files/{name}/content", "", "A file's bytes."},
    {"files/{name}", "GET", "A file object."},
    {"files/{name}", "DELETE", "Delete a file."},
    {"session", "GET", "The session object."},
    {"session", "DELETE", "End the session now; its files are wiped."},
    {"listSessions", "", "The pool's sessions."},
    {".management/getSession", "", "The session object."},
    {".management/listSessions", "", "The pool's sessions, 300 a page (?skip=)."},
    {".management/stopSession", "", "End the session now."},
    {"metadata", "", "The runtime and its installed packages."},
    {"{path}", "", "CustomContainer pools: any method and path but .management/ is forwarded to the session's container (targetPort)."},
};

bool server_route(std::string_view path) {
  return path == "/healthz" || path == "/readyz" || path == "/metrics" || path == "/openapi.json" ||
         path == "/pools" || path == "/pools/{pool}";
}

// The path relative to its pool endpoint ("code/execute"), or the path itself for server routes.
std::string_view relative(std::string_view path) {
  constexpr std::string_view kPooled = "/pools/{pool}/";
  if (server_route(path)) return path;
  if (path.substr(0, kPooled.size()) == kPooled) return path.substr(kPooled.size());
  return path.substr(1);
}

bool needs_identifier(std::string_view path) {
  if (server_route(path)) return false;
  std::string_view rel = relative(path);
  return rel != "listSessions" && rel != ".management/listSessions" && rel != "metadata";
}

std::string_view summary_for(std::string_view path, std::string_view method) {
  std::string_view rel = relative(path);
  for (const Doc& d : kDocs) {
    if (d.suffix == rel && (d.method.empty() || d.method == method)) return d.summary;
  }
  return "";
}

}  // namespace

void add_openapi_route(Api& api) {
  // Built once: the route table does not change after start-up.
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> paths;
  auto add = [&](llhttp_method_t m, const std::string& pattern) {
    std::string path = pattern;
    size_t rest = path.find("...}");
    if (rest != std::string::npos) path.erase(rest, 3);
    std::string method = llhttp_method_name(m);
    for (char& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    paths[path].emplace_back(method, std::string(summary_for(path, llhttp_method_name(m))));
  };
  for (const RouteSpec& r : api.router().routes()) {
    if (r.pattern.rfind("/_test/", 0) == 0) continue;
    add(r.method, r.pattern);
  }
  add(HTTP_GET, "/openapi.json");
  if (api.has_fallback()) {
    for (llhttp_method_t m : {HTTP_GET, HTTP_POST, HTTP_PUT, HTTP_PATCH, HTTP_DELETE}) add(m, "/pools/{pool}/{path...}");
  }
  std::string doc;
  JsonWriter w(doc);
  w.begin_object();
  w.key("openapi").string("3.0.3");
  w.key("info").begin_object().key("title").string("sandpool").key("version").string(SANDPOOL_VERSION_STRING);
  w.key("description").string("Azure Container Apps dynamic sessions API (code interpreter and custom containers), self-hosted.").end_object();
  w.key("paths").begin_object();
  for (const auto& [path, ops] : paths) {
    w.key(path).begin_object();
    for (const auto& [method, summary] : ops) {
      w.key(method).begin_object();
      if (!summary.empty()) w.key("summary").string(summary);
      w.key("parameters").begin_array();
      size_t pos = 0;
      while ((pos = path.find('{', pos)) != std::string::npos) {
        size_t end = path.find('}', pos);
        w.begin_object().key("name").string(path.substr(pos + 1, end - pos - 1)).key("in").string("path");
        w.key("required").boolean(true).key("schema").begin_object().key("type").string("string").end_object().end_object();
        pos = end;
      }
      if (needs_identifier(path)) {
        w.begin_object().key("name").string("identifier").key("in").string("query").key("required").boolean(true);
        w.key("schema").begin_object().key("type").string("string").end_object().end_object();
      }
      w.end_array();
      w.key("responses").begin_object().key("200").begin_object().key("description").string("OK").end_object();
      w.key("default").begin_object().key("description").string("Azure error body {error:{code,message,traceId}}").end_object();
      w.end_object();
      w.end_object();
    }
    w.end_object();
  }
  w.end_object();
  w.end_object();
  RouteOptions open;
  open.open = true;
  api.register_route(HTTP_GET, "/openapi.json", [doc](http::Exchange& ex, const RouteParams&) {
    ex.respond(200, "application/json; charset=utf-8", doc);
  }, open);
}

}  // namespace sp::api
