// PoolSettings: one pool's configuration (shared/API.md §5), parsed from JSON and validated;
// plain data, no behaviour. Used by the config file, the CLI's default pool and the management API.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace sp::pool {

enum class ContainerType { kPythonLTS, kShell };
enum class Isolation { kProcess, kMicroVm, kAuto };

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
};

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
