// Tests for pool/settings: Azure field names, validation, round trip.
#include "pool/settings.h"

#include <doctest/doctest.h>

namespace sp::pool {
namespace {

TEST_CASE("Azure-shaped settings apply, with the properties wrapper") {
  PoolSettings s;
  std::string msg;
  REQUIRE(apply_settings_json(R"({"properties":{"containerType":"Shell","scaleConfiguration":{"maxConcurrentSessions":7,"readySessionInstances":2},
    "dynamicPoolConfiguration":{"lifecycleConfiguration":{"lifecycleType":"Timed","cooldownPeriodInSeconds":60}},
    "sessionNetworkConfiguration":{"status":"EgressDisabled"},"resources":{"cpu":"0.5","memory":"1Gi"}}})",
                              &s, &msg)
              .ok());
  CHECK(s.container_type == ContainerType::kShell);
  CHECK(s.max_concurrent_sessions == 7);
  CHECK(s.ready_session_instances == 2);
  CHECK(s.cooldown_period_seconds == 60);
  CHECK(s.cpu == doctest::Approx(0.5));
  CHECK(s.memory_bytes == (1ull << 30));
}

TEST_CASE("bad settings are refused with a message and change nothing") {
  const char* bad[] = {
      "[]", "{", R"({"maxConcurrentSessions":0})", R"({"maxConcurrentSessions":"7"})",
      R"({"readySessionInstances":5,"maxConcurrentSessions":2})", R"({"containerType":"Cobol"})",
      R"({"resources":{"memory":"12"}})", R"({"resources":{"cpu":1000}})", R"({"name":"Bad_Name"})",
      R"({"maxConcurentSessions":3})", R"({"poolFullStatusCode":500})"};
  for (const char* b : bad) {
    PoolSettings s;
    std::string msg;
    CAPTURE(b);
    CHECK_FALSE(apply_settings_json(b, &s, &msg).ok());
    CHECK_FALSE(msg.empty());
    CHECK(s.max_concurrent_sessions == PoolSettings{}.max_concurrent_sessions);
  }
}

TEST_CASE("settings survive a JSON round trip") {
  PoolSettings s;
  s.name = "py-1";
  s.max_concurrent_sessions = 9;
  s.cooldown_period_seconds = 33;
  std::string json = settings_to_json(s);
  PoolSettings t;
  std::string msg;
  REQUIRE(apply_settings_json(json, &t, &msg).ok());
  CHECK(t.name == "py-1");
  CHECK(t.max_concurrent_sessions == 9);
  CHECK(t.cooldown_period_seconds == 33);
  CHECK(t.memory_bytes == s.memory_bytes);
}

TEST_CASE("pool names") {
  CHECK(valid_pool_name("default"));
  CHECK(valid_pool_name("a-1"));
  CHECK_FALSE(valid_pool_name(""));
  CHECK_FALSE(valid_pool_name("-a"));
  CHECK_FALSE(valid_pool_name("A"));
  CHECK_FALSE(valid_pool_name(std::string(64, 'a')));
}

}  // namespace
}  // namespace sp::pool
