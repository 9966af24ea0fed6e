// Network setup inside a sandbox: the new network namespace gets loopback up and nothing else; not egress (later).
#pragma once

#include "util/result.h"
#include "util/unique_fd.h"

namespace sp {

// Makes a network namespace ahead of need (DESIGN.md §4.3: creating one takes a kernel-wide
// lock and ~0.4–0.9 ms): unshare(NEWNET) on the calling thread, lo up, keep an fd on it,
// setns back. Needs CAP_SYS_ADMIN; call from a spawner thread, never the loop. A clone then
// setns()es into it instead of unsharing its own.
Result<UniqueFd> make_isolated_netns();

// In the child, in its own network namespace with CAP_NET_ADMIN there.
// Async-signal-safe; returns 0 or an errno.
int loopback_up_in_child();

}  // namespace sp
