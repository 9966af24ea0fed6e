// uid/gid maps from the parent and id switches in the child (async-signal-safe parts only after clone).
#include "sandbox/userns.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>

#include "sandbox/cgroup.h"

namespace sp {

IdMapping id_mapping_for_slot(uint64_t slot) {
  IdMapping m;
  if (geteuid() != 0) {
    m.privileged = false;
    m.host_root_uid = geteuid();
    m.host_root_gid = getegid();
    return m;
  }
  uint32_t base = kHostIdBase + 2 * static_cast<uint32_t>(slot % kHostIdSlots);
  m.host_root_uid = m.host_root_gid = base;
  m.host_user_uid = m.host_user_gid = base + 1;
  return m;
}

Status write_id_maps_from_parent(pid_t child, const IdMapping& m) {
  std::string dir = "/proc/" + std::to_string(child);
  std::string uid_map = "0 " + std::to_string(m.host_root_uid) + " 1\n";
  std::string gid_map = "0 " + std::to_string(m.host_root_gid) + " 1\n";
  if (m.range > 0) {
    uid_map = "0 " + std::to_string(m.host_root_uid) + " " + std::to_string(m.range) + "\n";
    gid_map = "0 " + std::to_string(m.host_root_gid) + " " + std::to_string(m.range) + "\n";
  } else if (m.privileged) {
    uid_map += std::to_string(kSandboxUid) + " " + std::to_string(m.host_user_uid) + " 1\n";
    gid_map += std::to_string(kSandboxGid) + " " + std::to_string(m.host_user_gid) + " 1\n";
  } else {
    // An unprivileged writer must deny setgroups before writing gid_map.
    SP_TRY(write_file(dir + "/setgroups", "deny"));
  }
  SP_TRY(write_file(dir + "/uid_map", uid_map));
  SP_TRY(write_file(dir + "/gid_map", gid_map));
  return {};
}

// Raw syscalls, not the glibc wrappers: in a child cloned from a multi-threaded parent (the
// exec path runs on a spawner thread), glibc's set*id/setgroups broadcast the change to every
// thread it believes exists, under a lock another parent thread may have held at clone time:
// the child then waits forever. The raw call changes the calling thread, the only one there is.
namespace {
int raw_setresuid(uid_t u) { return syscall(SYS_setresuid, u, u, u) != 0 ? errno : 0; }
int raw_setresgid(gid_t g) { return syscall(SYS_setresgid, g, g, g) != 0 ? errno : 0; }
}  // namespace

int become_root_in_child(bool privileged) {
  // Until this call the child still has the parent's host ids, unmapped inside.
  if (int err = raw_setresgid(0)) return err;
  if (int err = raw_setresuid(0)) return err;
  // Drops the parent's supplementary groups (host gid 0 among them); allowed
  // because a privileged parent wrote gid_map and left setgroups at "allow".
  if (privileged && syscall(SYS_setgroups, 0, nullptr) != 0) return errno;
  return 0;
}

int become_user_in_child(bool privileged, uid_t uid, gid_t gid) {
  if (!privileged) return 0;
  if (int err = raw_setresgid(gid)) return err;
  if (int err = raw_setresuid(uid)) return err;
  return 0;
}

}  // namespace sp
