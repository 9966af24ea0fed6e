// Query-string and identifier handling for the session API (shared/API.md §1); pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sp::api {

// Percent-decodes `in` ('+' is kept as is: identifiers may contain it only encoded as %2B).
// Returns nullopt on a malformed escape or a decoded NUL.
std::optional<std::string> percent_decode(std::string_view in);

// The decoded value of the first `name=` parameter of `query`; nullopt when absent or malformed.
std::optional<std::string> query_param(std::string_view query, std::string_view name);

// API.md §1: 4 to 128 characters from A-Z a-z 0-9 and | - & ^ % $ # ( ) { } [ ] ; < > _ : . @ ~
bool valid_identifier(std::string_view id);

}  // namespace sp::api
