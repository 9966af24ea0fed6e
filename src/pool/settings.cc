// Pool settings from and to JSON.
#include "pool/settings.h"

#include <simdjson.h>

#include <cmath>

#include "api/json.h"

namespace sp::pool {
namespace {

using simdjson::ondemand::object;
using simdjson::ondemand::value;

// resources.memory: "2Gi", "512Mi", "1.5Gi", or a number of bytes.
bool parse_memory(std::string_view s, uint64_t* out) {
  double mul = 1;
  if (s.size() > 2 && (s.substr(s.size() - 2) == "Gi" || s.substr(s.size() - 2) == "Mi" || s.substr(s.size() - 2) == "Ki")) {
    char unit = s[s.size() - 2];
    mul = unit == 'G' ? 1024.0 * 1024 * 1024 : unit == 'M' ? 1024.0 * 1024 : 1024.0;
    s.remove_suffix(2);
  }
  std::string t(s);
  char* end = nullptr;
  double v = std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || !(v > 0)) return false;
  double bytes = v * mul;
  if (bytes < 64.0 * 1024 * 1024 || bytes > 1024.0 * 1024 * 1024 * 1024) return false;
  *out = static_cast<uint64_t>(bytes);
  return true;
}

Status fail(std::string* message, std::string text) {
  *message = std::move(text);
  return Error{kEInvalid, "pool settings"};
}

Status get_u32(value v, const char* name, uint64_t lo, uint64_t hi, uint32_t* out, std::string* message) {
  uint64_t n = 0;
  if (v.get_uint64().get(n) != simdjson::SUCCESS || n < lo || n > hi) {
    return fail(message, std::string(name) + " must be a whole number from " + std::to_string(lo) + " to " +
                             std::to_string(hi));
  }
  *out = static_cast<uint32_t>(n);
  return {};
}

Status apply_object(object obj, PoolSettings* s, std::string* message, int depth);

Status apply_field(std::string_view key, value v, PoolSettings* s, std::string* message, int depth) {
  std::string_view str;
  if (key == "properties" || key == "dynamicPoolConfiguration" || key == "scaleConfiguration") {
    object inner;
    if (depth > 3 || v.get_object().get(inner) != simdjson::SUCCESS) return fail(message, std::string(key) + " must be an object");
    return apply_object(inner, s, message, depth + 1);
  }
  if (key == "name") {
    if (v.get_string().get(str) != simdjson::SUCCESS || !valid_pool_name(str)) {
      return fail(message, "name must be 1-63 characters of a-z, 0-9 and '-'");
    }
    s->name = std::string(str);
    return {};
  }
  if (key == "containerType" || key == "poolManagementType") {
    if (v.get_string().get(str) != simdjson::SUCCESS) return fail(message, std::string(key) + " must be a string");
    if (key == "poolManagementType") return {};  // "Dynamic": the only kind there is
    if (str == "PythonLTS") s->container_type = ContainerType::kPythonLTS;
    else if (str == "Shell") s->container_type = ContainerType::kShell;
    else return fail(message, "containerType must be PythonLTS or Shell (NodeLTS and CustomContainer are not available yet)");
    return {};
  }
  if (key == "maxConcurrentSessions") return get_u32(v, "maxConcurrentSessions", 1, 100000, &s->max_concurrent_sessions, message);
  if (key == "readySessionInstances") return get_u32(v, "readySessionInstances", 0, 10000, &s->ready_session_instances, message);
  if (key == "cooldownPeriodInSeconds") return get_u32(v, "cooldownPeriodInSeconds", 1, 86400 * 7, &s->cooldown_period_seconds, message);
  if (key == "executionTimeoutCapInSeconds") return get_u32(v, "executionTimeoutCapInSeconds", 1, 3600, &s->execution_timeout_cap_seconds, message);
  if (key == "allocationWaitInMilliseconds") return get_u32(v, "allocationWaitInMilliseconds", 0, 600000, &s->allocation_wait_ms, message);
  if (key == "poolFullStatusCode") {
    uint32_t code = 0;
    SP_TRY(get_u32(v, "poolFullStatusCode", 404, 429, &code, message));
    if (code != 404 && code != 429) return fail(message, "poolFullStatusCode must be 429 or 404");
    s->pool_full_status = static_cast<int>(code);
    return {};
  }
  if (key == "maxUploadBytes" || key == "dataSizeBytes") {
    uint64_t n = 0;
    if (v.get_uint64().get(n) != simdjson::SUCCESS || n < 1024 || n > (64ull << 30)) {
      return fail(message, std::string(key) + " must be a whole number of bytes from 1024 to 64 GiB");
    }
    (key == "maxUploadBytes" ? s->max_upload_bytes : s->data_size_bytes) = n;
    return {};
  }
  if (key == "lifecycleConfiguration") {
    object o;
    if (v.get_object().get(o) != simdjson::SUCCESS) return fail(message, "lifecycleConfiguration must be an object");
    for (auto result : o) {
      simdjson::ondemand::field field;
      std::string_view k;
      if (std::move(result).get(field) != simdjson::SUCCESS || field.unescaped_key().get(k) != simdjson::SUCCESS) return fail(message, "malformed JSON");
      if (k == "lifecycleType") {
        if (field.value().get_string().get(str) != simdjson::SUCCESS || str != "Timed") {
          return fail(message, "lifecycleType must be Timed for code-interpreter pools");
        }
      } else if (k == "cooldownPeriodInSeconds") {
        SP_TRY(get_u32(field.value(), "cooldownPeriodInSeconds", 1, 86400 * 7, &s->cooldown_period_seconds, message));
      } else {
        return fail(message, "unknown lifecycleConfiguration field " + std::string(k));
      }
    }
    return {};
  }
  if (key == "sessionNetworkConfiguration") {
    object o;
    if (v.get_object().get(o) != simdjson::SUCCESS) return fail(message, "sessionNetworkConfiguration must be an object");
    for (auto result : o) {
      simdjson::ondemand::field field;
      std::string_view k;
      if (std::move(result).get(field) != simdjson::SUCCESS || field.unescaped_key().get(k) != simdjson::SUCCESS) return fail(message, "malformed JSON");
      if (k != "status") return fail(message, "sessionNetworkConfiguration has only status");
      if (field.value().get_string().get(str) != simdjson::SUCCESS) return fail(message, "status must be a string");
      if (str == "EgressDisabled") s->egress_enabled = false;
      else if (str == "EgressEnabled") return fail(message, "EgressEnabled is not available yet: sessions have loopback only");
      else return fail(message, "status must be EgressDisabled or EgressEnabled");
    }
    return {};
  }
  if (key == "resources") {
    object o;
    if (v.get_object().get(o) != simdjson::SUCCESS) return fail(message, "resources must be an object");
    for (auto result : o) {
      simdjson::ondemand::field field;
      std::string_view k;
      if (std::move(result).get(field) != simdjson::SUCCESS || field.unescaped_key().get(k) != simdjson::SUCCESS) return fail(message, "malformed JSON");
      value fv = field.value();
      if (k == "cpu") {
        double cpu = 0;
        if (fv.get_double().get(cpu) != simdjson::SUCCESS) {
          std::string_view cs;
          if (fv.get_string().get(cs) != simdjson::SUCCESS) return fail(message, "resources.cpu must be a number");
          std::string t(cs);
          char* end = nullptr;
          cpu = std::strtod(t.c_str(), &end);
          if (t.empty() || end != t.c_str() + t.size()) return fail(message, "resources.cpu must be a number");
        }
        if (!(cpu >= 0.05 && cpu <= 64)) return fail(message, "resources.cpu must be from 0.05 to 64");
        s->cpu = cpu;
      } else if (k == "memory") {
        if (fv.get_string().get(str) != simdjson::SUCCESS || !parse_memory(str, &s->memory_bytes)) {
          return fail(message, "resources.memory must look like \"2Gi\" or \"512Mi\" (64Mi to 1024Gi)");
        }
      } else {
        return fail(message, "unknown resources field " + std::string(k));
      }
    }
    return {};
  }
  if (key == "isolation") {
    if (v.get_string().get(str) != simdjson::SUCCESS) return fail(message, "isolation must be a string");
    if (str == "process") s->isolation = Isolation::kProcess;
    else if (str == "microvm") s->isolation = Isolation::kMicroVm;
    else if (str == "auto") s->isolation = Isolation::kAuto;
    else return fail(message, "isolation must be process, microvm or auto");
    return {};
  }
  return fail(message, "unknown pool setting " + std::string(key));
}

Status apply_object(object obj, PoolSettings* s, std::string* message, int depth) {
  for (auto result : obj) {
    simdjson::ondemand::field field;
    std::string_view key;
    if (std::move(result).get(field) != simdjson::SUCCESS || field.unescaped_key().get(key) != simdjson::SUCCESS) {
      return fail(message, "malformed JSON");
    }
    SP_TRY(apply_field(key, field.value(), s, message, depth));
  }
  return {};
}

}  // namespace

bool valid_pool_name(std::string_view name) {
  if (name.empty() || name.size() > 63 || name.front() == '-' || name.back() == '-') return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

Status apply_settings_json(std::string_view json, PoolSettings* settings, std::string* message) {
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded(json);
  simdjson::ondemand::document doc;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS) return fail(message, "malformed JSON");
  object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) return fail(message, "pool settings must be a JSON object");
  PoolSettings copy = *settings;
  SP_TRY(apply_object(obj, &copy, message, 0));
  if (copy.ready_session_instances > copy.max_concurrent_sessions) {
    return fail(message, "readySessionInstances cannot exceed maxConcurrentSessions");
  }
  if (copy.default_execution_timeout_seconds > copy.execution_timeout_cap_seconds) {
    copy.default_execution_timeout_seconds = copy.execution_timeout_cap_seconds;
  }
  *settings = copy;
  return {};
}

const char* container_type_name(ContainerType t) { return t == ContainerType::kShell ? "Shell" : "PythonLTS"; }

const char* isolation_name(Isolation i) {
  switch (i) {
    case Isolation::kProcess: return "process";
    case Isolation::kMicroVm: return "microvm";
    case Isolation::kAuto: return "auto";
  }
  return "process";
}

std::string settings_to_json(const PoolSettings& s) {
  std::string out;
  api::JsonWriter w(out);
  w.begin_object();
  w.key("name").string(s.name);
  w.key("containerType").string(container_type_name(s.container_type));
  w.key("maxConcurrentSessions").number_u(s.max_concurrent_sessions);
  w.key("readySessionInstances").number_u(s.ready_session_instances);
  w.key("cooldownPeriodInSeconds").number_u(s.cooldown_period_seconds);
  w.key("executionTimeoutCapInSeconds").number_u(s.execution_timeout_cap_seconds);
  w.key("maxUploadBytes").number_u(s.max_upload_bytes);
  w.key("dataSizeBytes").number_u(s.data_size_bytes);
  w.key("resources").begin_object();
  w.key("cpu").number(s.cpu);
  w.key("memory").string(std::to_string(s.memory_bytes / (1024 * 1024)) + "Mi");
  w.end_object();
  w.key("sessionNetworkConfiguration").begin_object().key("status").string(s.egress_enabled ? "EgressEnabled" : "EgressDisabled").end_object();
  w.key("isolation").string(isolation_name(s.isolation));
  w.key("poolFullStatusCode").number(static_cast<int64_t>(s.pool_full_status));
  w.key("allocationWaitInMilliseconds").number_u(s.allocation_wait_ms);
  w.end_object();
  return out;
}

}  // namespace sp::pool
