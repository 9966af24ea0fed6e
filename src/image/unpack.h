// Safe tar extraction into a directory held open by fd: the hostile-archive rules of image
// import live here; it knows nothing of OCI manifests (see oci_import.h for that).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::image {

// Limits on what one import may write; passing one is an error (kETooLarge).
struct UnpackLimits {
  uint64_t max_total_bytes = uint64_t{8} << 30;  // file data over all archives of one import
  uint64_t max_entries = 1'000'000;              // archive entries over all archives of one import
  uint64_t max_file_bytes = uint64_t{4} << 30;   // one regular file
};

// Running totals checked against UnpackLimits; one per import, shared by its archives.
struct UnpackCounters {
  uint64_t total_bytes = 0;
  uint64_t entries = 0;
};

enum class ArchiveKind {
  Layer,   // an image layer: files, directories, links, whiteouts; devices/FIFOs skipped
  Bundle,  // an image tarball (OCI layout or docker save): files and directories only
};

// Extracts the tar (gzip, zstd or uncompressed, detected) read from `archive_fd` into the
// directory `root_dirfd`. Every path is resolved component by component with
// openat(O_NOFOLLOW) from `root_dirfd`, so nothing (not even a symlink made by an earlier
// entry) can lead outside it. Rejected with kEInvalid: absolute paths, `..` components,
// paths through a symlink, relative symlinks climbing above the root, hardlinks to paths
// outside or missing. Neutralised: setuid/setgid bits dropped, device nodes, FIFOs and
// sockets skipped, directories kept owner-writable (u+rwx) so the tree can be removed;
// ownership is not applied. On error the directory holds a partial tree: the caller
// removes it. Blocking; call from a worker thread, not the event loop.
Status unpack_archive(int archive_fd, int root_dirfd, ArchiveKind kind, const UnpackLimits& limits,
                      UnpackCounters& counters);

// Removes `name` in `dirfd` and, for a directory, everything below it, never following a
// symlink. A missing `name` is success.
Status remove_tree_at(int dirfd, const char* name);

// Splits a relative archive path into components ("./" and empty parts dropped); rejects
// absolute paths and `..` with kEInvalid.
Result<std::vector<std::string>> split_relative_path(std::string_view path);

// Opens `rel_path` below `root_dirfd` with `flags` (O_NOFOLLOW and O_CLOEXEC are added),
// refusing symlinks in every component.
Result<UniqueFd> open_beneath(int root_dirfd, std::string_view rel_path, int flags);

}  // namespace sp::image
