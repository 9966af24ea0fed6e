// The files routes of shared/API.md §2 and §4: upload (multipart), list (both shapes), content,
// metadata and delete of files in a session's /mnt/data, through its agent. Loop thread only.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "api/api.h"
#include "pool/pool_manager.h"

namespace sp::api {

void add_file_routes(Api& api, pool::PoolManager& pools);

// API.md §4 name rules: strips "/mnt/data/", refuses "..", NUL, absolute names and components
// over 255 bytes. Empty result (the root) only when `allow_root`. nullopt when refused.
std::optional<std::string> clean_file_name(std::string_view raw, bool allow_root);

// Content-Type by file extension (application/octet-stream when unknown).
std::string_view content_type_for(std::string_view name);

}  // namespace sp::api
