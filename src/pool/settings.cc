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
Status apply_field(std::string_view key, value v, PoolSettings* s, std::string* message, int depth);

// Iterates the fields of an object value: fn(key, value) → Status.
template <class Fn>
Status for_each_field(value v, const char* name, std::string* message, Fn fn) {
  object o;
  if (v.get_object().get(o) != simdjson::SUCCESS) return fail(message, std::string(name) + " must be an object");
  for (auto result : o) {
    simdjson::ondemand::field field;
    std::string_view k;
    if (std::move(result).get(field) != simdjson::SUCCESS || field.unescaped_key().get(k) != simdjson::SUCCESS) {
      return fail(message, "malformed JSON");
    }
    SP_TRY(fn(k, field.value()));
  }
  return {};
}

// Iterates the elements of an array value: fn(element) → Status.
template <class Fn>
Status for_each_element(value v, const char* name, std::string* message, Fn fn) {
  simdjson::ondemand::array a;
  if (v.get_array().get(a) != simdjson::SUCCESS) return fail(message, std::string(name) + " must be an array");
  for (auto result : a) {
    value e;
    if (std::move(result).get(e) != simdjson::SUCCESS) return fail(message, "malformed JSON");
    SP_TRY(fn(e));
  }
  return {};
}

constexpr size_t kMaxContainerStrings = 256;  // entries of command, args or env
constexpr size_t kMaxContainerString = 4096;  // bytes of one entry

Status get_string_list(value v, const char* name, std::vector<std::string>* out, std::string* message) {
  out->clear();
  return for_each_element(v, name, message, [&](value e) -> Status {
    std::string_view str;
    if (e.get_string().get(str) != simdjson::SUCCESS) return fail(message, std::string(name) + " must be an array of strings");
    if (out->size() >= kMaxContainerStrings || str.size() > kMaxContainerString || str.find('\0') != str.npos) {
      return fail(message, std::string(name) + ": at most 256 strings of 4096 bytes, no NUL");
    }
    out->emplace_back(str);
    return {};
  });
}

bool valid_env_name(std::string_view n) {
  if (n.empty() || n.size() > 256 || (n[0] >= '0' && n[0] <= '9')) return false;
  for (char c : n) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

// env: Azure's [{"name":"K","value":"V"}] (secretRef is refused: there are no secrets here).
Status get_env(value v, ContainerSettings* c, std::string* message) {
  c->env.clear();
  return for_each_element(v, "env", message, [&](value e) -> Status {
    std::string name, val;
    SP_TRY(for_each_field(e, "env item", message, [&](std::string_view k, value fv) -> Status {
      std::string_view str;
      if (k != "name" && k != "value") return fail(message, "env items have name and value (secretRef is not supported)");
      if (fv.get_string().get(str) != simdjson::SUCCESS) return fail(message, "env " + std::string(k) + " must be a string");
      if (str.size() > kMaxContainerString || str.find('\0') != str.npos) return fail(message, "env values: at most 4096 bytes, no NUL");
      (k == "name" ? name : val) = std::string(str);
      return {};
    }));
    if (!valid_env_name(name)) return fail(message, "env name must be letters, digits, '_', '.' or '-'");
    if (c->env.size() >= kMaxContainerStrings) return fail(message, "env: at most 256 variables");
    c->env.emplace_back(std::move(name), std::move(val));
    return {};
  });
}

Status get_port(value v, const char* name, uint16_t* out, std::string* message) {
  uint32_t port = 0;
  SP_TRY(get_u32(v, name, 1, 65535, &port, message));
  *out = static_cast<uint16_t>(port);
  return {};
}

// probes: [{"type":"Startup"|"Readiness"|"Liveness", "tcpSocket":{"port"} | "httpGet":{"path","port"}, timings}].
// Readiness gates Ready like Startup does (a pool has no traffic to withhold from a ready sandbox).
Status get_probes(value v, ContainerSettings* c, std::string* message) {
  c->startup.reset();
  c->liveness.reset();
  return for_each_element(v, "probes", message, [&](value e) -> Status {
    ProbeSettings p;  // a configured probe starts from Azure's (Kubernetes') defaults
    p.period_seconds = 10;
    p.failure_threshold = 3;
    std::string type;
    bool has_action = false;
    SP_TRY(for_each_field(e, "probe", message, [&](std::string_view k, value fv) -> Status {
      std::string_view str;
      if (k == "type") {
        if (fv.get_string().get(str) != simdjson::SUCCESS) return fail(message, "probe type must be a string");
        type = std::string(str);
        return {};
      }
      if (k == "tcpSocket" || k == "httpGet") {
        if (has_action) return fail(message, "a probe has one of tcpSocket or httpGet");
        has_action = true;
        p.kind = k == "tcpSocket" ? ProbeSettings::Kind::kTcp : ProbeSettings::Kind::kHttp;
        return for_each_field(fv, std::string(k).c_str(), message, [&](std::string_view pk, value pv) -> Status {
          std::string_view ps;
          if (pk == "port") return get_port(pv, "probe port", &p.port, message);
          if (pk == "path" && p.kind == ProbeSettings::Kind::kHttp) {
            if (pv.get_string().get(ps) != simdjson::SUCCESS || ps.empty() || ps[0] != '/' || ps.size() > 2048) {
              return fail(message, "probe path must start with '/' (at most 2048 bytes)");
            }
            for (char ch : ps) {
              if (static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f) return fail(message, "probe path must not contain spaces or control characters");
            }
            p.path = std::string(ps);
            return {};
          }
          if (pk == "scheme" && p.kind == ProbeSettings::Kind::kHttp) {
            if (pv.get_string().get(ps) != simdjson::SUCCESS || (ps != "HTTP" && ps != "http")) return fail(message, "probe scheme must be HTTP");
            return {};
          }
          if (pk == "host") return fail(message, "probe host is not supported: probes reach the session's own sandbox");
          return fail(message, "unknown probe field " + std::string(pk));
        });
      }
      if (k == "initialDelaySeconds") return get_u32(fv, "initialDelaySeconds", 0, 60, &p.initial_delay_seconds, message);
      if (k == "periodSeconds") return get_u32(fv, "periodSeconds", 1, 240, &p.period_seconds, message);
      if (k == "timeoutSeconds") return get_u32(fv, "timeoutSeconds", 1, 240, &p.timeout_seconds, message);
      if (k == "failureThreshold") return get_u32(fv, "failureThreshold", 1, 10, &p.failure_threshold, message);
      if (k == "successThreshold") return get_u32(fv, "successThreshold", 1, 10, &p.success_threshold, message);
      if (k == "terminationGracePeriodSeconds") {
        uint32_t ignored = 0;
        return get_u32(fv, "terminationGracePeriodSeconds", 0, 3600, &ignored, message);
      }
      return fail(message, "unknown probe field " + std::string(k));
    }));
    if (!has_action) return fail(message, "a probe needs tcpSocket or httpGet");
    if (type == "Startup" || type == "Readiness") {
      if (c->startup) return fail(message, "at most one Startup (or Readiness) probe");
      c->startup = p;
    } else if (type == "Liveness") {
      if (c->liveness) return fail(message, "at most one Liveness probe");
      c->liveness = p;
    } else {
      return fail(message, "probe type must be Startup, Readiness or Liveness");
    }
    return {};
  });
}

// One entry of customContainerTemplate.containers, or the same fields at the pool's top level.
Status apply_container_field(std::string_view k, value fv, PoolSettings* s, std::string* message, int depth) {
  ContainerSettings& c = s->container;
  std::string_view str;
  if (k == "image") {
    if (fv.get_string().get(str) != simdjson::SUCCESS || str.empty() || str.size() > 4096 || str.find('\0') != str.npos) {
      return fail(message, "image must be a path to an OCI image layout or tarball");
    }
    c.image = std::string(str);
    return {};
  }
  if (k == "command" || k == "args") {
    std::vector<std::string> list;
    SP_TRY(get_string_list(fv, std::string(k).c_str(), &list, message));
    (k == "command" ? c.command : c.args) = std::move(list);
    return {};
  }
  if (k == "env") return get_env(fv, &c, message);
  if (k == "probes") return get_probes(fv, &c, message);
  if (k == "targetPort") return get_port(fv, "targetPort", &c.target_port, message);
  if (k == "upstreamTimeoutInSeconds") return get_u32(fv, "upstreamTimeoutInSeconds", 1, 3600, &c.upstream_timeout_seconds, message);
  if (k == "resources") return apply_field(k, fv, s, message, depth);
  return fail(message, "unknown container field " + std::string(k));
}

Status apply_custom_container_template(value v, PoolSettings* s, std::string* message, int depth) {
  return for_each_field(v, "customContainerTemplate", message, [&](std::string_view k, value fv) -> Status {
    if (k == "containers") {
      size_t n = 0;
      return for_each_element(fv, "containers", message, [&](value e) -> Status {
        if (++n > 1) return fail(message, "containers: one container per session");
        return for_each_field(e, "container", message, [&](std::string_view ck, value cv) -> Status {
          if (ck == "name") {
            std::string_view ignored;
            if (cv.get_string().get(ignored) != simdjson::SUCCESS) return fail(message, "container name must be a string");
            return {};
          }
          return apply_container_field(ck, cv, s, message, depth);
        });
      });
    }
    if (k == "ingress") {
      return for_each_field(fv, "ingress", message, [&](std::string_view ik, value iv) -> Status {
        if (ik == "targetPort") return get_port(iv, "targetPort", &s->container.target_port, message);
        return fail(message, "unknown ingress field " + std::string(ik));
      });
    }
    if (k == "registryCredentials") return fail(message, "registryCredentials: images are read from the server's disk, not pulled");
    return fail(message, "unknown customContainerTemplate field " + std::string(k));
  });
}

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
    else if (str == "CustomContainer") s->container_type = ContainerType::kCustomContainer;
    else return fail(message, "containerType must be PythonLTS, Shell or CustomContainer (NodeLTS is not available yet)");
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
    return for_each_field(v, "lifecycleConfiguration", message, [&](std::string_view k, value fv) -> Status {
      if (k == "lifecycleType") {
        if (fv.get_string().get(str) != simdjson::SUCCESS) return fail(message, "lifecycleType must be a string");
        if (str == "Timed") s->lifecycle = Lifecycle::kTimed;
        else if (str == "OnContainerExit") s->lifecycle = Lifecycle::kOnContainerExit;
        else return fail(message, "lifecycleType must be Timed or OnContainerExit");
        return {};
      }
      if (k == "cooldownPeriodInSeconds") return get_u32(fv, "cooldownPeriodInSeconds", 1, 86400 * 7, &s->cooldown_period_seconds, message);
      if (k == "maxAlivePeriodInSeconds") return get_u32(fv, "maxAlivePeriodInSeconds", 1, 86400 * 7, &s->max_alive_period_seconds, message);
      return fail(message, "unknown lifecycleConfiguration field " + std::string(k));
    });
  }
  if (key == "customContainerTemplate") return apply_custom_container_template(v, s, message, depth);
  if (key == "image" || key == "command" || key == "args" || key == "env" || key == "probes" || key == "targetPort" ||
      key == "upstreamTimeoutInSeconds") {
    return apply_container_field(key, v, s, message, depth);
  }
  if (key == "ingress") {
    return for_each_field(v, "ingress", message, [&](std::string_view ik, value iv) -> Status {
      if (ik == "targetPort") return get_port(iv, "targetPort", &s->container.target_port, message);
      return fail(message, "unknown ingress field " + std::string(ik));
    });
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
  bool custom = copy.container_type == ContainerType::kCustomContainer;
  if (custom && (copy.container.image.empty() || copy.container.target_port == 0)) {
    return fail(message, "a CustomContainer pool needs image and targetPort");
  }
  if (!custom && (!copy.container.image.empty() || copy.container.target_port != 0 || copy.container.command ||
                  copy.container.args || !copy.container.env.empty() || copy.container.startup || copy.container.liveness)) {
    return fail(message, "image, command, args, env, probes and targetPort are for CustomContainer pools");
  }
  if (!custom && copy.lifecycle == Lifecycle::kOnContainerExit) {
    return fail(message, "lifecycleType OnContainerExit is for CustomContainer pools");
  }
  if (custom && copy.isolation == Isolation::kMicroVm) {
    return fail(message, "CustomContainer pools use the process tier (isolation process or auto)");
  }
  if (copy.default_execution_timeout_seconds > copy.execution_timeout_cap_seconds) {
    copy.default_execution_timeout_seconds = copy.execution_timeout_cap_seconds;
  }
  *settings = copy;
  return {};
}

const char* container_type_name(ContainerType t) {
  switch (t) {
    case ContainerType::kPythonLTS: return "PythonLTS";
    case ContainerType::kShell: return "Shell";
    case ContainerType::kCustomContainer: return "CustomContainer";
  }
  return "PythonLTS";
}

ProbeSettings effective_startup_probe(const PoolSettings& s) {
  if (s.container.startup) return *s.container.startup;
  ProbeSettings p;  // Azure's default: TCP on the ingress port, every second, for up to 4 minutes
  p.timeout_seconds = 3;
  return p;
}

namespace {

void write_probe(api::JsonWriter& w, const char* type, const ProbeSettings& p) {
  w.begin_object();
  w.key("type").string(type);
  if (p.kind == ProbeSettings::Kind::kTcp) {
    w.key("tcpSocket").begin_object();
  } else {
    w.key("httpGet").begin_object().key("path").string(p.path);
  }
  if (p.port != 0) w.key("port").number_u(p.port);
  w.end_object();
  w.key("initialDelaySeconds").number_u(p.initial_delay_seconds);
  w.key("periodSeconds").number_u(p.period_seconds);
  w.key("timeoutSeconds").number_u(p.timeout_seconds);
  w.key("failureThreshold").number_u(p.failure_threshold);
  w.key("successThreshold").number_u(p.success_threshold);
  w.end_object();
}

void write_strings(api::JsonWriter& w, const std::vector<std::string>& list) {
  w.begin_array();
  for (const std::string& x : list) w.string(x);
  w.end_array();
}

}  // namespace

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
  w.key("lifecycleConfiguration").begin_object();
  if (s.lifecycle == Lifecycle::kTimed) {
    w.key("lifecycleType").string("Timed").key("cooldownPeriodInSeconds").number_u(s.cooldown_period_seconds);
  } else {
    w.key("lifecycleType").string("OnContainerExit");
    if (s.max_alive_period_seconds != 0) w.key("maxAlivePeriodInSeconds").number_u(s.max_alive_period_seconds);
  }
  w.end_object();
  if (s.container_type == ContainerType::kCustomContainer) {
    const ContainerSettings& c = s.container;
    w.key("image").string(c.image);
    if (c.command) write_strings(w.key("command"), *c.command);
    if (c.args) write_strings(w.key("args"), *c.args);
    w.key("env").begin_array();
    for (const auto& [name, val] : c.env) w.begin_object().key("name").string(name).key("value").string(val).end_object();
    w.end_array();
    w.key("targetPort").number_u(c.target_port);
    w.key("upstreamTimeoutInSeconds").number_u(c.upstream_timeout_seconds);
    w.key("probes").begin_array();
    if (c.startup) write_probe(w, "Startup", *c.startup);
    if (c.liveness) write_probe(w, "Liveness", *c.liveness);
    w.end_array();
  }
  w.end_object();
  return out;
}

}  // namespace sp::pool
