// Privilege removal in a sandbox child: rlimits, bounding set, securebits, capabilities, NO_NEW_PRIVS; not the id switch.
//
// All functions run in the child between clone and exec (or in a template
// clone), are async-signal-safe and return 0 or an errno.
#pragma once

#include <sys/resource.h>

#include <cstdint>

namespace sp {

struct RlimitSetting {
  int resource;
  rlim_t soft, hard;
};

struct RlimitSet {
  RlimitSetting items[8];
  int count = 0;
};

// Default rlimits of a sandbox: no core dumps, bounded fds, files and locked memory.
RlimitSet default_rlimits(uint64_t max_file_bytes, uint32_t max_procs);

int apply_rlimits_in_child(const RlimitSet& set);
// Needs CAP_SETPCAP in the current user ns: call while still root there.
// clear_bounding_set() then lock_securebits_in_child().
int drop_bounding_set_in_child();
// Empties the bounding set (≈ 41 prctl calls). It limits only what an execve can grant, not the
// capabilities held, so a pool template clears its own once and its clones inherit it.
int clear_bounding_set();
// SECBIT_NOROOT and friends, locked: no privilege from uid 0 or setuid files again.
int lock_securebits_in_child();
// After the switch to the unprivileged user: clears every set incl. ambient.
int clear_caps_in_child();
int set_no_new_privs_in_child();

}  // namespace sp
