// Error bodies and trace ids.
#include "api/errors.h"

#include <sys/random.h>

#include <cstdint>

#include "api/json.h"

namespace sp::api {

std::string_view error_code_for_status(int status) {
  switch (status) {
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 408: return "RequestTimeout";
    case 413: return "PayloadTooLarge";
    case 414: return "UriTooLong";
    case 429: return "TooManyRequests";
    case 431: return "RequestHeaderFieldsTooLarge";
    case 500: return "InternalServerError";
    case 503: return "ServiceUnavailable";
    default: return "Error";
  }
}

std::string new_trace_id() {
  // splitmix64 over a counter seeded once from the kernel: unique per process, cheap per call.
  static uint64_t state = [] {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed) seed = 0x9e3779b97f4a7c15ull;
    return seed;
  }();
  auto next = [] {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  static const char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  uint64_t a = next(), b = next();
  for (int i = 0; i < 16; ++i) {
    id[i] = kHex[(a >> (60 - 4 * i)) & 15];
    id[16 + i] = kHex[(b >> (60 - 4 * i)) & 15];
  }
  return id;
}

void respond_error(http::Exchange& ex, int status, std::string_view code, std::string_view message,
                   std::string_view extra_headers) {
  std::string body;
  JsonWriter w(body);
  w.begin_object().key("error").begin_object();
  w.key("code").string(code).key("message").string(message).key("traceId").string(new_trace_id());
  w.end_object().end_object();
  std::string headers = "x-ms-error-code: ";
  headers += code;
  headers += "\r\n";
  headers += extra_headers;
  ex.respond(status, "application/json; charset=utf-8", body, headers);
}

}  // namespace sp::api
