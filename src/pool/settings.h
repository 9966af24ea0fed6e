// PoolSettings: one pool's configuration (shared/API.md §5), parsed from JSON and validated;
// plain data, no behaviour. Used by the config file, the CLI's default pool and the management API.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/result.h"

namespace sp::pool {

enum class ContainerType { kPythonLTS, kShell, kCustomContainer };
enum class Isolation { kProcess, kMicroVm, kAuto };
// Timed: the cooldown ends a session, every request resets it. OnContainerExit (custom containers):
// the session ends when its entrypoint exits, or after maxAlivePeriodInSeconds.
enum class Lifecycle { kTimed, kOnContainerExit };

// A container probe (Azure's ContainerAppProbe): a TCP connect or an HTTP GET (2xx/3xx passes) on a
// port inside the sandbox. A Startup probe gates Ready; a Liveness probe replaces a ready sandbox
// that fails it `failure_threshold` times in a row, and ends an allocated one the same way.
struct ProbeSettings {
  enum class Kind { kTcp, kHttp };
  Kind kind = Kind::kTcp;
  std::string path = "/";              // httpGet.path
  uint16_t port = 0;                   // 0: the pool's targetPort
  uint32_t initial_delay_seconds = 0;
  uint32_t period_seconds = 1;
  uint32_t timeout_seconds = 1;
  uint32_t failure_threshold = 240;
  uint32_t success_threshold = 1;
};

// What a CustomContainer pool runs (API.md §5; Azure's customContainerTemplate + ingress).
struct ContainerSettings {
  std::string image;                    // OCI image layout directory or tarball on the server's host
  std::optional<std::vector<std::string>> command;  // replaces the image's Entrypoint
  std::optional<std::vector<std::string>> args;     // replaces the image's Cmd
  std::vector<std::pair<std::string, std::string>> env;  // added to / overriding the image's Env
  uint16_t target_port = 0;
  uint32_t upstream_timeout_seconds = 240;  // no response head from the container in this long: 504
  std::optional<ProbeSettings> startup;   // none given: a TCP probe on targetPort (Azure's default)
  std::optional<ProbeSettings> liveness;  // none given: no liveness probing
};

struct PoolSettings {
  std::string name = "default";
  ContainerType container_type = ContainerType::kPythonLTS;
  uint32_t max_concurrent_sessions = 100;
  uint32_t ready_session_instances = 4;
  uint32_t cooldown_period_seconds = 300;
  uint32_t execution_timeout_cap_seconds = 220;
  uint32_t default_execution_timeout_seconds = 120;
  uint64_t max_upload_bytes = 128ull << 20;
  uint64_t data_size_bytes = 1ull << 30;   // the /mnt/data quota
  uint64_t memory_bytes = 2ull << 30;      // resources.memory
  double cpu = 1.0;                        // resources.cpu (cores)
  bool egress_enabled = false;             // sessionNetworkConfiguration.status
  Isolation isolation = Isolation::kProcess;
  int pool_full_status = 429;              // 429 (default) or 404 for strict Azure fidelity
  uint32_t allocation_wait_ms = 10000;     // how long a request waits for a ready sandbox
  Lifecycle lifecycle = Lifecycle::kTimed;
  uint32_t max_alive_period_seconds = 0;   // OnContainerExit: 0 = no bound
  ContainerSettings container;             // CustomContainer pools only
};

// The startup probe a CustomContainer pool uses: the configured one, or TCP on targetPort.
ProbeSettings effective_startup_probe(const PoolSettings& s);

// Pool names: 1 to 63 characters of a-z 0-9 and '-', not starting or ending with '-'.
bool valid_pool_name(std::string_view name);

// Applies the fields present in the JSON object `json` onto `settings` (Azure names: see API.md §5;
// the `properties` wrapper and the `customContainerTemplate`-less shape are accepted). Unknown
// fields are an error, so a typo never silently yields a default.
Status apply_settings_json(std::string_view json, PoolSettings* settings, std::string* message);

// The settings as the management API shows them.
std::string settings_to_json(const PoolSettings& s);

const char* container_type_name(ContainerType t);
const char* isolation_name(Isolation i);

}  // namespace sp::pool
