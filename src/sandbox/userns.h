// User-namespace id maps: the parent writes them, the child switches ids; not the capability drop (caps.h).
//
// Inside a sandbox, uid/gid 0 is used only during setup and uid/gid 1000
// ("sandbox") runs the code. Outside, a root parent maps them to a per-sandbox
// pair of unprivileged host ids (host_base + 2*slot, +1); a non-root parent can
// only map its own ids, to inside 0 (and the code then runs as that "root" with
// no capabilities).
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "util/result.h"

namespace sp {

inline constexpr uid_t kSandboxUid = 1000;
inline constexpr gid_t kSandboxGid = 1000;
inline constexpr uint32_t kHostIdBase = 2000000;  // far above any real account
inline constexpr uint32_t kHostIdSlots = 1000000;

struct IdMapping {
  bool privileged = true;  // parent is host root: two ids mapped per sandbox
  uid_t host_root_uid = 0;  // outside id of inside 0
  uid_t host_user_uid = 0;  // outside id of inside 1000 (privileged only)
  gid_t host_root_gid = 0;
  gid_t host_user_gid = 0;
  uint32_t range = 0;       // > 0 (custom containers): inside 0..range-1 → host_root_uid.. in one line
};

// The mapping for sandbox `slot` (any integer; reduced modulo kHostIdSlots).
IdMapping id_mapping_for_slot(uint64_t slot);

// From the parent, after clone(NEWUSER) and before the child proceeds.
Status write_id_maps_from_parent(pid_t child, const IdMapping& m);

// In the child: become 0:0 inside with no supplementary groups. Returns 0 or errno.
int become_root_in_child(bool privileged);
// In the child: become the unprivileged user (privileged mapping only). Returns 0 or errno.
int become_user_in_child(bool privileged, uid_t uid = kSandboxUid, gid_t gid = kSandboxGid);

}  // namespace sp
