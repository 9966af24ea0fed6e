// A container's root filesystem on the host side: the shared image rootfs id-mapped and read-only,
// under a per-sandbox writable overlay upper layer on a size-limited tmpfs; plus the child's mount
// plan over it and the reclaim of a dead run's leftovers. Not the spawn itself (spawner.h).
//
// Method (see README.md): the spawner thread (host root, init user namespace)
//   1. makes a user namespace that maps inside 0..65535 to the sandbox's host id range (only to
//      describe the id mapping; it holds no process) — cached per slot;
//   2. mounts a tmpfs of `data_bytes` (the writable layer) and, in it, upper/ (owned by the
//      container's root) and work/;
//   3. clones the image rootfs as a detached mount (open_tree), makes it id-mapped through that
//      user namespace and read-only (mount_setattr), attaches it;
//   4. mounts overlayfs (lower = the id-mapped image, upper/work on the tmpfs) and detaches the
//      tmpfs and lower mounts at once (overlayfs keeps private clones of its layers).
// The sandbox child binds the overlay as its root. Once the child has exec'd, the host detaches
// the overlay too: from then on the layer lives only in the sandbox's mount namespace and is freed
// with it (wiped when its last process dies), so a crash leaves nothing mounted on the host.
// Files in the image owned by uid N appear owned by N inside; files a container writes land in its
// own upper layer, owned by its own host range.
//
// Threading: any single non-loop thread (blocking mount syscalls).
#pragma once

#include <cstdint>
#include <string>

#include "container/launch.h"
#include "sandbox/mounts.h"
#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::container {

// A user namespace mapping inside 0..range-1 to host ids host_base.. (uid and gid), as an fd for
// MOUNT_ATTR_IDMAP. Costs a short-lived helper process.
Result<UniqueFd> make_idmap_userns(uint32_t host_base, uint32_t range);

// Steps 2–4 above in `dir` (created; must not exist). Returns the overlay's mount point, dir/root.
Result<std::string> mount_writable_root(const std::string& dir, const std::string& image_rootfs, int idmap_userns_fd,
                                        uint32_t host_root_id, uint64_t data_bytes);

// Detaches whatever is still mounted under `dir` and removes it (never descends into a mount).
void remove_layer_dir(const std::string& dir);

// The child's plan: bind the overlay (source 0, set per sandbox by set_root_source) as the root,
// a small /dev, /dev/shm, a fresh /proc (/proc/sys read-only), /etc/hosts when the image has none,
// the working directory; all nosuid, nodev.
Result<MountPlan> build_container_plan(const Launch& launch);
void set_root_source(MountPlan& plan, const std::string& root);

// Run directories: <run_root>/<owner_tag>/ per server process. Removes those of dead processes
// (their mounts detached first). Returns how many were reclaimed.
int reclaim_run_dirs(const std::string& run_root);

}  // namespace sp::container
