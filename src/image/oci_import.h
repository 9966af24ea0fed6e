// Import of an OCI image layout or docker-save tarball into a per-digest rootfs; not the
// sandbox that later runs it (see DESIGN.md §6).
#pragma once

#include <string>
#include <vector>

#include "image/unpack.h"
#include "util/result.h"

namespace sp::image {

// What a session needs to run an imported image; taken from the image config JSON.
struct ImageInfo {
  std::string digest;                      // "sha256:<hex>" of the image config
  std::string rootfs;                      // <store_dir>/<hex>/rootfs
  std::vector<std::string> entrypoint;     // config.Entrypoint
  std::vector<std::string> cmd;            // config.Cmd
  std::vector<std::string> env;            // config.Env, "NAME=value"
  std::string working_dir;                 // config.WorkingDir ("" when unset)
  std::string user;                        // config.User ("" when unset)
  std::vector<std::string> exposed_ports;  // keys of config.ExposedPorts, e.g. "8080/tcp"
  bool reused = false;                     // the rootfs existed already and was not unpacked
};

using ImportLimits = UnpackLimits;

// Imports `source` into `store_dir` (created if missing, one level). `source` is one of:
// an OCI image-layout directory (oci-layout, index.json, blobs/sha256/...), a tarball of
// one, or a `docker save` tarball (manifest.json, config JSON, layer tars).
// Integrity: the manifest and config must match their descriptors' sha256 (and size); each
// layer is read once, and its bytes must match its descriptor's sha256 and size (OCI) and
// its uncompressed tar the config's rootfs.diff_ids entry at the same position (both kinds;
// a docker-save config named by a digest must match it). Layers are unpacked in order with
// whiteouts into <store_dir>/<hex>/rootfs, hex = the config's sha256, keeping the entries'
// uid/gid when run as root (ids above limits.max_owner_id are refused; see unpack.h).
// Store: the tree is built under a temporary name (flock'ed while its import runs), flushed
// to disk, given a `complete` marker last, then renamed into place; only a tree with the
// current marker is reused, an incomplete or outdated one is replaced. Each call first
// removes temporaries left by dead importers (their flock is free). Concurrent imports of
// the same image into the same store, by threads or processes, are safe: the loser of the
// rename uses the winner's tree.
// Malformed, tampered or hostile input is an Error (kEInvalid, kETooLarge, kENotFound)
// naming the rule it broke; nothing is written outside `store_dir`, and a failed import
// leaves nothing behind in it. Blocking and CPU-heavy: call from a worker thread.
Result<ImageInfo> import_image(const std::string& source, const std::string& store_dir,
                               const ImportLimits& limits = {});

}  // namespace sp::image
