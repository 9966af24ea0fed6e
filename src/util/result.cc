// Formatting of Error values for logs and error bodies.
#include "util/result.h"

namespace sp {

std::string Error::message() const {
  std::string out = where;
  out += ": ";
  switch (code) {
    case kEInvalid: out += "invalid input"; break;
    case kETooLarge: out += "over the limit"; break;
    case kEProtocol: out += "protocol error"; break;
    case kENotFound: out += "not found"; break;
    default: out += std::strerror(code); break;
  }
  return out;
}

}  // namespace sp
