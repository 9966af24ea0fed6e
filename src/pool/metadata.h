// The body of GET metadata (API.md §2): the Python runtime and the packages really installed,
// read once at start-up from Debian's /usr/bin/python3. Not on the loop: call before it runs.
#pragma once

#include <string>

namespace sp::pool {

std::string collect_metadata_json(const std::string& python = "/usr/bin/python3");

}  // namespace sp::pool
