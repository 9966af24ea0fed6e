// `sandpool serve` flags: defaults, each kind of flag, and the errors a user sees.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config.h"

namespace {

struct Parsed {
  bool ok = false;
  sp::ServerConfig config;
  std::string error, help;
};

Parsed parse(std::vector<std::string> args) {
  args.insert(args.begin(), "serve");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  Parsed p;
  p.ok = sp::parse_serve_args(static_cast<int>(argv.size()), argv.data(), &p.config, &p.error, &p.help);
  return p;
}

}  // namespace

TEST_CASE("serve flags: defaults") {
  Parsed p = parse({});
  REQUIRE(p.ok);
  CHECK(p.config.host == "127.0.0.1");
  CHECK(p.config.port == 8080);
  CHECK(p.config.default_pool);
  CHECK(p.config.template_memory == sp::TemplateMemory::kShared);
  CHECK(p.config.default_pool_json.empty());
  CHECK(p.config.container_log_rate == 100);
}

TEST_CASE("serve flags: switches, values and pool settings") {
  Parsed p = parse({"--template-memory", "huge", "--listen", "[::1]:9000", "--no-default-pool", "--pool-ready=2",
                    "--pool-isolation", "microvm", "--pool-memory", "1Gi", "--agent-dir", "/x", "--log-level", "warn"});
  REQUIRE_MESSAGE(p.ok, p.error);
  CHECK(p.config.template_memory == sp::TemplateMemory::kHugePages);
  CHECK(parse({"--template-memory=plain"}).config.template_memory == sp::TemplateMemory::kPlain);
  CHECK(parse({}).config.templates_per_pool == 1);
  CHECK(parse({"--templates-per-pool", "2"}).config.templates_per_pool == 2);
  CHECK_FALSE(parse({"--templates-per-pool", "9"}).ok);
  CHECK(parse({}).config.busy_poll_us == 100);
  CHECK(parse({"--busy-poll-us", "0"}).config.busy_poll_us == 0);
  CHECK(parse({"--busy-poll-us=250"}).config.busy_poll_us == 250);
  CHECK_FALSE(parse({"--busy-poll-us", "10001"}).ok);
  CHECK(p.config.host == "::1");
  CHECK(p.config.port == 9000);
  CHECK_FALSE(p.config.default_pool);
  CHECK(p.config.default_pool_json ==
        "\"readySessionInstances\":2,\"isolation\":\"microvm\",\"resources\":{\"memory\":\"1Gi\"}");
  CHECK(p.config.agent_dir == "/x");
  CHECK(p.config.log_level == sp::LogLevel::kWarn);
  CHECK(parse({"--container-log-rate", "0"}).config.container_log_rate == 0);
}

TEST_CASE("serve flags: errors name the flag") {
  struct Bad {
    std::vector<std::string> args;
    const char* says;
  };
  const Bad bad[] = {
      {{"--listen", "8080"}, "--listen wants HOST:PORT"},
      {{"--listen", "h:70000"}, "--listen wants HOST:PORT"},
      {{"--pool-ready"}, "missing value for --pool-ready"},
      {{"--pool-type", "a\"b"}, "is not a valid value"},  // would break out of the JSON string
      {{"--api-key", ""}, "non-empty key"},
      {{"--log-level", "loud"}, "--log-level wants"},
      {{"--container-log-rate", "-1"}, "--container-log-rate wants a whole number from 0 to 100000"},
      {{"--template-huge-pages"}, "unknown option '--template-huge-pages'"},
      {{"--template-memory", "thp"}, "--template-memory wants shared, huge or plain, got 'thp'"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.says);
    Parsed p = parse(b.args);
    CHECK_FALSE(p.ok);
    CHECK(p.error.find(b.says) != std::string::npos);
  }
}

TEST_CASE("serve flags: --help gives the usage, which lists every switch") {
  Parsed p = parse({"--help"});
  CHECK_FALSE(p.ok);
  CHECK(p.error.empty());
  for (const char* flag : {"--template-memory", "--allow-unauthenticated", "--no-default-pool", "--pool-isolation"})
    CHECK(p.help.find(flag) != std::string::npos);
}
