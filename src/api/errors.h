// The one place that turns failures into HTTP answers: status, Azure error body, x-ms-error-code.
// Body: {"error":{"code":"<Code>","message":"<text>","traceId":"<id>"}} (shared/API.md §1).
#pragma once

#include <string>
#include <string_view>

#include "http/handler.h"

namespace sp::api {

// The Azure-style code for a status the HTTP layer produces by itself (400 → "BadRequest", ...).
std::string_view error_code_for_status(int status);

// A fresh 32-hex-digit trace id.
std::string new_trace_id();

// A session that ended while a request to it was in flight (deleted, stopped, its pool deleted):
// 409 SessionEnded, a request about something that no longer exists. A sandbox that broke instead
// (its agent lost: the request's error is not ECANCELED) is 500 SessionLost.
inline constexpr int kSessionEndedStatus = 409;
inline constexpr const char* kSessionEnded = "SessionEnded";

// Responds with the error body. `extra_headers`: complete header lines (e.g. "Allow: GET\r\n").
void respond_error(http::Exchange& ex, int status, std::string_view code, std::string_view message,
                   std::string_view extra_headers = {});

}  // namespace sp::api
