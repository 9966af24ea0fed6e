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

TEST_CASE("custom-container settings in Azure's customContainerTemplate shape") {
  PoolSettings s;
  std::string msg;
  REQUIRE_MESSAGE(apply_settings_json(R"({"properties":{"containerType":"CustomContainer",
    "customContainerTemplate":{"containers":[{"name":"app","image":"/srv/images/pyapp","command":["/usr/bin/python3"],
      "args":["/app/app.py","-q"],"env":[{"name":"PORT","value":"8080"},{"name":"MODE","value":"a=b"}],
      "resources":{"cpu":0.5,"memory":"1Gi"},
      "probes":[{"type":"Startup","httpGet":{"path":"/healthz","port":8080},"periodSeconds":2,"failureThreshold":5},
                {"type":"Liveness","tcpSocket":{"port":8080},"periodSeconds":10}]}],
      "ingress":{"targetPort":8080}},
    "dynamicPoolConfiguration":{"lifecycleConfiguration":{"lifecycleType":"OnContainerExit","maxAlivePeriodInSeconds":600}}}})",
                                      &s, &msg)
                      .ok(),
                  msg);
  CHECK(s.container_type == ContainerType::kCustomContainer);
  CHECK(s.container.image == "/srv/images/pyapp");
  REQUIRE(s.container.command);
  CHECK(*s.container.command == std::vector<std::string>{"/usr/bin/python3"});
  CHECK(s.container.args->size() == 2);
  REQUIRE(s.container.env.size() == 2);
  CHECK(s.container.env[1].second == "a=b");
  CHECK(s.container.target_port == 8080);
  REQUIRE(s.container.startup);
  CHECK(s.container.startup->kind == ProbeSettings::Kind::kHttp);
  CHECK(s.container.startup->path == "/healthz");
  CHECK(s.container.startup->failure_threshold == 5);
  REQUIRE(s.container.liveness);
  CHECK(s.container.liveness->kind == ProbeSettings::Kind::kTcp);
  CHECK(s.container.liveness->failure_threshold == 3);  // Azure's defaults for what is not given
  CHECK(s.container.liveness->timeout_seconds == 1);
  CHECK(s.container.startup->period_seconds == 2);
  CHECK(s.lifecycle == Lifecycle::kOnContainerExit);
  CHECK(s.max_alive_period_seconds == 600);
  CHECK(s.cpu == doctest::Approx(0.5));

  // The flat shape (API.md §5) and a round trip through the management API's JSON.
  PoolSettings flat;
  REQUIRE(apply_settings_json(R"({"containerType":"CustomContainer","image":"/i","targetPort":80})", &flat, &msg).ok());
  CHECK(effective_startup_probe(flat).kind == ProbeSettings::Kind::kTcp);
  PoolSettings back;
  back.name = "";
  REQUIRE_MESSAGE(apply_settings_json(settings_to_json(s), &back, &msg).ok(), msg);
  CHECK(back.container.image == s.container.image);
  CHECK(*back.container.args == *s.container.args);
  CHECK(back.container.env == s.container.env);
  CHECK(back.container.startup->path == "/healthz");
  CHECK(back.container.liveness->period_seconds == 10);
  CHECK(back.lifecycle == Lifecycle::kOnContainerExit);
}

TEST_CASE("custom-container settings: bad input is refused") {
  const char* bad[] = {
      R"({"containerType":"CustomContainer"})",                          // no image, no port
      R"({"containerType":"CustomContainer","image":"/i"})",             // no targetPort
      R"({"containerType":"CustomContainer","image":"/i","targetPort":70000})",
      R"({"image":"/i","targetPort":80})",                               // not a container pool
      R"({"lifecycleConfiguration":{"lifecycleType":"OnContainerExit"}})",
      R"({"containerType":"CustomContainer","image":"/i","targetPort":80,"env":[{"name":"1X","value":""}]})",
      R"({"containerType":"CustomContainer","image":"/i","targetPort":80,"env":[{"name":"A","secretRef":"s"}]})",
      R"({"containerType":"CustomContainer","image":"/i","targetPort":80,"probes":[{"type":"Startup"}]})",
      R"({"containerType":"CustomContainer","image":"/i","targetPort":80,"probes":[{"type":"Startup","httpGet":{"path":"x"}}]})",
      R"({"containerType":"CustomContainer","image":"/i","targetPort":80,"probes":[{"type":"Weird","tcpSocket":{}}]})",
      R"({"containerType":"CustomContainer","image":"/i","targetPort":80,"command":"python"})",
      R"({"containerType":"CustomContainer","image":"/i","targetPort":80,"isolation":"microvm"})",
      R"({"customContainerTemplate":{"containers":[{"image":"/a"},{"image":"/b"}]}})",
      R"({"customContainerTemplate":{"registryCredentials":{}}})",
  };
  for (const char* json : bad) {
    PoolSettings s;
    std::string msg;
    CHECK_MESSAGE(!apply_settings_json(json, &s, &msg).ok(), json);
    CHECK_MESSAGE(!msg.empty(), json);
    CHECK(s.container.image.empty());
  }
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
