// multipart/form-data (RFC 7578) over a complete body in memory: finds parts and their names;
// copies nothing. Untrusted input: every malformation is an error, never a crash.
#pragma once

#include <string>
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

// Fills name, filename and content_type of `part` from a part's header block; error when malformed.
Status parse_part_headers(std::string_view headers, MultipartPart* part);

// The boundary parameter of a multipart/form-data Content-Type, or an error.
Result<std::string_view> multipart_boundary(std::string_view content_type);

// Splits `body` into parts; at most `max_parts`.
Result<std::vector<MultipartPart>> parse_multipart(std::string_view body, std::string_view boundary,
                                                   size_t max_parts = 64);

// The same format, parsed incrementally as the body arrives; it keeps at most one header block
// (16 KiB) or a delimiter's length of bytes. Events are called from feed().
class MultipartStream {
 public:
  class Events {
   public:
    virtual ~Events() = default;
    virtual void on_part_begin(const MultipartPart& part) = 0;  // part.data is empty
    virtual void on_part_data(std::string_view data) = 0;       // valid during the call
    virtual void on_part_end() = 0;
  };
  MultipartStream(std::string_view boundary, Events* events);
  Status feed(std::string_view chunk);
  // The body ended: an error unless the closing delimiter was seen.
  Status finish() const;

 private:
  enum class State { kPreamble, kAfterDelimiter, kHeaders, kData, kDone };
  std::string delimiter_;  // "\r\n--" + boundary
  Events* events_;
  State state_ = State::kPreamble;
  std::string buf_;
  size_t parts_ = 0;
};

}  // namespace sp::api
