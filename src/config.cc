// Flag parsing for `sandpool serve`: one table of flags, each with its range and help text.
#include "config.h"

#include <cctype>
#include <cstring>
#include <functional>
#include <optional>

#include "util/numbers.h"

namespace sp {
namespace {

struct UintFlag {
  const char* name;
  uint64_t min;
  uint64_t max;
  const char* help;
};


}  // namespace

bool parse_serve_args(int argc, char** argv, ServerConfig* c, std::string* error, std::string* help) {
  error->clear();
  struct Num {
    UintFlag flag;
    std::function<void(uint64_t)> set;
  };
  const Num nums[] = {
      {{"--max-connections", 1, 1000000, "open connections before accepting pauses (10000)"},
       [&](uint64_t v) { c->max_connections = v; }},
      {{"--header-timeout-ms", 1, 3600000, "time for a request's head to arrive, else 408 (10000)"},
       [&](uint64_t v) { c->header_timeout_ms = v; }},
      {{"--idle-timeout-ms", 1, 86400000, "keep-alive idle time before the server closes (60000)"},
       [&](uint64_t v) { c->idle_timeout_ms = v; }},
      {{"--shutdown-timeout-ms", 0, 3600000, "on SIGTERM/SIGINT, time given to requests in flight (10000)"},
       [&](uint64_t v) { c->shutdown_timeout_ms = v; }},
      {{"--max-url-bytes", 64, 1 << 20, "request target limit, else 414 (8192)"},
       [&](uint64_t v) { c->max_url_bytes = v; }},
      {{"--max-header-bytes", 256, 16 << 20, "header fields limit, else 431 (65536)"},
       [&](uint64_t v) { c->max_header_bytes = v; }},
      {{"--max-body-bytes", 0, 1ull << 34, "default request body limit, else 413 (1048576)"},
       [&](uint64_t v) { c->max_body_bytes = v; }},
      {{"--backlog", 1, 65535, "listen backlog (1024)"}, [&](uint64_t v) { c->backlog = static_cast<int>(v); }},
      {{"--container-log-rate", 0, 100000, "lines/s of each container's stdout+stderr logged; 0: discard (100)"},
       [&](uint64_t v) { c->container_log_rate = static_cast<uint32_t>(v); }},
      {{"--templates-per-pool", 1, 8, "Python templates forking each process-tier pool's sandboxes (1)"},
       [&](uint64_t v) { c->templates_per_pool = static_cast<uint32_t>(v); }},
      {{"--busy-poll-us", 0, 10000, "after I/O, the loop polls this long before it sleeps; 0: never (100)"},
       [&](uint64_t v) { c->busy_poll_us = v; }},
  };
  auto usage = [&] {
    std::string u =
        "usage: sandpool serve [options]\n\n"
        "  --listen HOST:PORT         address to serve (127.0.0.1:8080; port 0 picks a free port)\n"
        "  --port-file PATH           write the bound port there once listening\n"
        "  --access-log PATH|-        one JSON line per request (off by default)\n"
        "  --log-level LEVEL          debug, info, warn, error (info)\n"
        "  --test-routes              serve /_test/echo and /_test/sleep (for tests only)\n"
        "  --no-default-pool          do not create the PythonLTS pool 'default'\n"
        "  --pool-type TYPE           default pool: PythonLTS or Shell (PythonLTS)\n"
        "  --pool-ready N             default pool: sandboxes kept ready (4)\n"
        "  --pool-max N               default pool: maxConcurrentSessions (100)\n"
        "  --pool-cooldown S          default pool: cooldownPeriodInSeconds (300)\n"
        "  --pool-memory SIZE         default pool: memory per session, e.g. 2Gi (2Gi)\n"
        "  --pool-isolation MODE      default pool: process, microvm or auto (process)\n"
        "  --pools-file PATH          more pools: {\"pools\":[{settings as in the management API}]}\n"
        "  --api-key KEY              accept 'Authorization: Bearer KEY' (repeatable); with none, any\n"
        "  --api-keys-file PATH       one key per line\n"
        "  --allow-unauthenticated    serve a non-loopback address without API keys\n"
        "  --template-memory MODE     how Python templates hold their memory for forks: shared (a\n"
        "                             sealed memfd, the default), huge (huge pages) or plain (README)\n"
        "  --agent-dir DIR            where sandpool_agent.py is (default: beside the binary)\n"
        "  --runtime-dir DIR          where template.py and libsandpool_clone.so are (default: beside the binary;\n"
        "                             a sandpool-init there serves custom containers)\n"
        "  --image-store DIR          where custom-container images are unpacked (/var/lib/sandpool/images)\n";
    for (const Num& n : nums) {
      char line[160];
      std::snprintf(line, sizeof line, "  %-26s %s\n", (std::string(n.flag.name) + " N").c_str(), n.flag.help);
      u += line;
    }
    return u;
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    size_t eq = arg.find('=');
    std::string name(arg.substr(0, eq));
    if (eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      has_value = true;
    }
    auto take = [&]() -> bool {
      if (has_value) return true;
      if (i + 1 >= argc) {
        *error = "missing value for " + name;
        return false;
      }
      value = argv[++i];
      has_value = true;
      return true;
    };
    if (name == "--help" || name == "-h") {
      *help = usage();
      return false;
    }
    if (name == "--test-routes") {
      c->test_routes = true;
      continue;
    }
    if (name == "--no-default-pool") {
      c->default_pool = false;
      continue;
    }
    if (name == "--allow-unauthenticated") {
      c->allow_unauthenticated = true;
      continue;
    }
    struct PoolFlag {
      const char* flag;
      const char* field;
      bool quoted;
    };
    static const PoolFlag kPoolFlags[] = {{"--pool-type", "containerType", true},
                                          {"--pool-ready", "readySessionInstances", false},
                                          {"--pool-max", "maxConcurrentSessions", false},
                                          {"--pool-cooldown", "cooldownPeriodInSeconds", false},
                                          {"--pool-memory", "resources", true},
                                          {"--pool-isolation", "isolation", true}};
    bool pool_flag = false;
    for (const PoolFlag& f : kPoolFlags) {
      if (name != f.flag) continue;
      pool_flag = true;
      if (!take()) return false;
      for (char ch : value) {
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.') {
          *error = name + ": '" + std::string(value) + "' is not a valid value";
          return false;
        }
      }
      if (!c->default_pool_json.empty()) c->default_pool_json += ',';
      if (std::string_view(f.field) == "resources") {
        c->default_pool_json += "\"resources\":{\"memory\":\"" + std::string(value) + "\"}";
      } else if (f.quoted) {
        c->default_pool_json += "\"" + std::string(f.field) + "\":\"" + std::string(value) + "\"";
      } else {
        c->default_pool_json += "\"" + std::string(f.field) + "\":" + std::string(value);
      }
    }
    if (pool_flag) continue;
    if (name == "--pools-file" || name == "--agent-dir" || name == "--runtime-dir" || name == "--api-key" ||
        name == "--api-keys-file" || name == "--image-store") {
      if (!take()) return false;
      std::string v(value);
      if (name == "--pools-file") c->pools_file = v;
      if (name == "--agent-dir") c->agent_dir = v;
      if (name == "--runtime-dir") c->runtime_dir = v;
      if (name == "--image-store") c->image_store = v;
      if (name == "--api-key") {
        if (v.empty()) {
          *error = "--api-key wants a non-empty key";
          return false;
        }
        c->api_keys.push_back(v);
      }
      if (name == "--api-keys-file") {
        FILE* f = std::fopen(v.c_str(), "r");
        if (!f) {
          *error = "--api-keys-file: cannot open " + v;
          return false;
        }
        char line[4096];
        while (std::fgets(line, sizeof line, f)) {
          std::string k(line);
          while (!k.empty() && (k.back() == '\n' || k.back() == '\r' || k.back() == ' ')) k.pop_back();
          if (!k.empty() && k[0] != '#') c->api_keys.push_back(k);
        }
        std::fclose(f);
      }
      continue;
    }
    if (name == "--listen") {
      if (!take()) return false;
      size_t colon = value.rfind(':');
      std::optional<uint64_t> port;
      if (colon != std::string_view::npos) port = parse_whole<uint64_t>(value.substr(colon + 1));
      if (!port || *port > 65535) {
        *error = "--listen wants HOST:PORT, got '" + std::string(value) + "'";
        return false;
      }
      std::string_view host = value.substr(0, colon);
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
      c->host = std::string(host);
      c->port = static_cast<int>(*port);
      continue;
    }
    if (name == "--template-memory") {
      if (!take()) return false;
      auto m = parse_template_memory(value);
      if (!m) {
        *error = "--template-memory wants shared, huge or plain, got '" + std::string(value) + "'";
        return false;
      }
      c->template_memory = *m;
      continue;
    }
    if (name == "--port-file") {
      if (!take()) return false;
      c->port_file = std::string(value);
      continue;
    }
    if (name == "--access-log") {
      if (!take()) return false;
      c->access_log = std::string(value);
      continue;
    }
    if (name == "--log-level") {
      if (!take()) return false;
      if (!parse_log_level(std::string(value).c_str(), &c->log_level)) {
        *error = "--log-level wants debug, info, warn or error";
        return false;
      }
      continue;
    }
    bool known = false;
    for (const Num& n : nums) {
      if (name != n.flag.name) continue;
      known = true;
      if (!take()) return false;
      std::optional<uint64_t> v = parse_whole<uint64_t>(value);
      if (!v || *v < n.flag.min || *v > n.flag.max) {
        *error = name + " wants a whole number from " + std::to_string(n.flag.min) + " to " +
                 std::to_string(n.flag.max) + ", got '" + std::string(value) + "'";
        return false;
      }
      n.set(*v);
    }
    if (!known) {
      *error = "unknown option '" + std::string(arg) + "' (see sandpool serve --help)";
      return false;
    }
  }
  return true;
}

}  // namespace sp
