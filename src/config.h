// ServerConfig: plain settings of `sandpool serve`, parsed from flags and validated; no globals.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sandbox/template_memory.h"
#include "util/log.h"

namespace sp {

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string port_file;  // written with the bound port once listening
  int backlog = 1024;
  size_t max_connections = 10000;
  uint64_t header_timeout_ms = 10000;
  uint64_t idle_timeout_ms = 60000;
  uint64_t shutdown_timeout_ms = 10000;
  size_t max_url_bytes = 8192;
  size_t max_header_bytes = 64 * 1024;
  uint64_t max_body_bytes = 1 << 20;
  std::string access_log;  // empty: off; "-": stdout
  LogLevel log_level = LogLevel::kInfo;
  bool test_routes = false;  // /_test/echo and /_test/sleep, for the integration tests
  // Pools.
  bool default_pool = true;        // a PythonLTS pool named "default", also served at the root
  std::string default_pool_json;   // settings of the default pool from flags, as JSON fields
  std::string pools_file;          // JSON: {"pools":[{settings}, ...]}
  std::string agent_dir;           // sandpool_agent.py; empty: beside the binary
  std::string runtime_dir;         // template.py + libsandpool_clone.so; empty: beside the binary
  std::string image_store = "/var/lib/sandpool/images";  // custom-container images, unpacked per digest
  uint32_t container_log_rate = 100;  // lines/s of each container's output into our log; 0: discarded
  // Auth.
  std::vector<std::string> api_keys;
  bool allow_unauthenticated = false;  // serve a non-loopback address without API keys
  // How process-tier Python templates lay out their memory (PoolTemplateConfig::memory).
  TemplateMemory template_memory = TemplateMemory::kShared;
  // Python templates per process-tier pool, forking in parallel (PoolTemplateConfig::templates):
  // refill ≈ 1.4x faster with 2 on 2 cores, for one more template's memory (README, Configuration).
  uint32_t templates_per_pool = 1;
  // After I/O the loop keeps polling this long before it sleeps (util/event_loop.h); 0: never.
  uint64_t busy_poll_us = 100;
};

// Parses `serve` flags (argv[0] is "serve"). On error returns false with a message in *error;
// on --help returns false with *error empty and the usage text in *help.
bool parse_serve_args(int argc, char** argv, ServerConfig* config, std::string* error, std::string* help);

}  // namespace sp
