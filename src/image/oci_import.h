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
// one, or a `docker save` tarball (manifest.json, config JSON, layer tars). The chosen
// manifest's config and layers are checked against their sha256 digests (and sizes), then
// the layers are unpacked in order with whiteouts into <store_dir>/<hex>/rootfs. The
// rootfs appears atomically (built under a temporary name, then renamed) and holds a
// `complete` marker next to it; an existing complete one is reused, not unpacked again.
// Malformed or hostile input is an Error (kEInvalid, kETooLarge, kENotFound) naming the
// rule it broke; nothing is written outside `store_dir`, and temporary trees are removed.
// Blocking and CPU-heavy: call from a worker thread. Concurrent imports of the same image
// into the same store are safe (the loser of the rename reuses the winner's tree).
Result<ImageInfo> import_image(const std::string& source, const std::string& store_dir,
                               const ImportLimits& limits = {});

}  // namespace sp::image
