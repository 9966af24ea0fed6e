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
  // Highest uid/gid an entry may be owned by: container sandboxes map inside ids 0..65535
  // (container::kContainerIdRange), so a file owned by a higher id would be unusable there.
  uint32_t max_owner_id = 65535;
  // Bytes an archive may carry after the tar's end-of-archive blocks (read only to hash them).
  uint64_t max_trailing_bytes = uint64_t{64} << 20;
};

// Running totals checked against UnpackLimits; one per import, shared by its archives.
struct UnpackCounters {
  uint64_t total_bytes = 0;
  uint64_t entries = 0;
};

// What unpack_archive measured of one archive, for the caller's digest checks. The whole
// input is read (also past the tar's end), so the digests cover every byte.
struct ArchiveDigests {
  std::string stored_sha256;  // hex sha256 of the bytes read from archive_fd (compressed or not)
  uint64_t stored_bytes = 0;
  std::string tar_sha256;     // hex sha256 of the uncompressed tar stream (an OCI diff_id)
  // In: when >= 0, reading more than this many bytes from archive_fd stops the unpack
  // (kEInvalid): a descriptor's size is known before the blob is read.
  int64_t max_stored_bytes = -1;
};

enum class ArchiveKind {
  Layer,   // an image layer: files, directories, links, whiteouts; devices/FIFOs skipped
  Bundle,  // an image tarball (OCI layout or docker save): files and directories only
};

// Extracts the tar (gzip, zstd or uncompressed, detected) read from `archive_fd` into the
// directory `root_dirfd`, reading the input once; `digests`, when given, receives the sha256
// of the input and of the uncompressed tar (checked by the caller, who discards the tree on
// a mismatch). Every path is resolved component by component with
// openat(O_NOFOLLOW) from `root_dirfd`, so nothing (not even a symlink made by an earlier
// entry) can lead outside it. Rejected with kEInvalid: absolute paths, `..` components,
// paths through a symlink, relative symlinks climbing above the root, hardlinks to paths
// outside or missing. Neutralised: setuid/setgid bits dropped, device nodes, FIFOs and
// sockets skipped. Ownership: a Layer entry owned by a uid or gid above
// `limits.max_owner_id` is refused (kEInvalid); when the caller is root (geteuid() == 0) every
// layer entry gets the archive's uid/gid (hardlinks share their target's) and directories
// their exact mode; otherwise files stay the caller's and directories are kept owner-writable
// (u+rwx) so the tree can be removed. Bundle entries are always the caller's. On error the
// directory holds a partial tree: the caller removes it. Blocking; call from a worker thread,
// not the event loop.
Status unpack_archive(int archive_fd, int root_dirfd, ArchiveKind kind, const UnpackLimits& limits,
                      UnpackCounters& counters, ArchiveDigests* digests = nullptr);

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
