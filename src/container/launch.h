// What a custom container runs: the image config merged with the pool's overrides (Docker/Kubernetes
// semantics), and the checks of the image rootfs that make it safe to mount over; not the spawn.
//
// Called on the loop thread in ContainerSource::start() (reads a few files of the rootfs, never
// following a symlink out of it). Errors carry a static `where` that says what is wrong with the image.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "image/oci_import.h"
#include "pool/settings.h"
#include "util/result.h"

namespace sp::container {

// Inside ids of a container map to a range of this many host ids (one range per sandbox).
inline constexpr uint32_t kContainerIdRange = 65536;

struct Launch {
  std::vector<std::string> argv;  // Entrypoint + Cmd after the overrides
  std::vector<std::string> env;   // NAME=value; image Env, then the pool's env (overriding)
  std::string workdir = "/";      // absolute, inside the container
  uid_t uid = 0;                  // inside ids (< kContainerIdRange)
  gid_t gid = 0;
  uint16_t port = 0;              // targetPort, or the image's first exposed TCP port
  bool has_etc_hosts = false;     // the image brings /etc/hosts (else we add one)
  bool has_etc = false;
};

// `command` replaces Entrypoint and drops the image's Cmd unless `args` is given; `args` replaces
// Cmd; `env` entries override image entries of the same name. User "uid[:gid]" or "name[:group]"
// (names from the rootfs's /etc/passwd and /etc/group). PATH defaults to the usual one, HOME to
// the user's home (or /). The rootfs's /dev, /proc, /etc and every component of the working
// directory must be real directories (or absent): the spawn mounts over them.
Result<Launch> resolve_launch(const image::ImageInfo& image, const pool::ContainerSettings& settings);

// Reads `path` (absolute, inside `rootfs`) with every symlink resolved inside the rootfs
// (openat2 RESOLVE_IN_ROOT); at most `max_bytes`.
Result<std::string> read_in_root(const std::string& rootfs, const std::string& path, size_t max_bytes = 1 << 20);

}  // namespace sp::container
