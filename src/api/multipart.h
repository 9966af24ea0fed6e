// multipart/form-data (RFC 7578) over a complete body in memory: finds parts and their names;
// copies nothing. Untrusted input: every malformation is an error, never a crash.
#pragma once

#include <string_view>
#include <vector>

#include "util/result.h"

namespace sp::api {

struct MultipartPart {
  std::string_view name;          // form field name
  std::string_view filename;      // empty when the part is not a file
  std::string_view content_type;  // empty when absent
  std::string_view data;
};

// The boundary parameter of a multipart/form-data Content-Type, or an error.
Result<std::string_view> multipart_boundary(std::string_view content_type);

// Splits `body` into parts; at most `max_parts`.
Result<std::vector<MultipartPart>> parse_multipart(std::string_view body, std::string_view boundary,
                                                   size_t max_parts = 64);

}  // namespace sp::api
