// Pool settings as the management API receives them (PUT/POST .management/pools, API.md §5) and
// as the pools file holds them: JSON from a client. Input: the JSON text. Checks, besides "no
// crash":
//  - refused settings come with a message;
//  - accepted settings keep the limits the server relies on (ready <= max, a default timeout
//    within the cap, a pool-full status of 429 or 404, a valid name);
//  - what the management API shows (settings_to_json) is accepted back and shows the same.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_split.h"
#include "pool/settings.h"

using namespace sp::pool;
using sp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view json(reinterpret_cast<const char*>(data), size);
  PoolSettings s;
  std::string message;
  if (!apply_settings_json(json, &s, &message).ok()) {
    check(!message.empty(), "a refusal says why");
    return 0;
  }
  check(valid_pool_name(s.name), "an accepted pool has a valid name");
  check(s.ready_session_instances <= s.max_concurrent_sessions, "ready <= maxConcurrentSessions");
  check(s.default_execution_timeout_seconds <= s.execution_timeout_cap_seconds, "default timeout within the cap");
  check(s.pool_full_status == 429 || s.pool_full_status == 404, "pool-full status 429 or 404");
  check(s.cpu > 0 && s.cpu == s.cpu, "a positive cpu");

  std::string shown = settings_to_json(s);
  PoolSettings back;
  std::string why;
  if (!apply_settings_json(shown, &back, &why).ok()) {
    fprintf(stderr, "fuzz: %s\nrefused: %s\n", shown.c_str(), why.c_str());
    sp::fuzz::fail("what the management API shows is accepted back");
  }
  check(settings_to_json(back) == shown, "shown settings read back the same");
  return 0;
}
