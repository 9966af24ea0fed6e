// Network setup inside a sandbox: the new network namespace gets loopback up and nothing else; not egress (later).
#pragma once

namespace sp {

// In the child, in its own network namespace with CAP_NET_ADMIN there.
// Async-signal-safe; returns 0 or an errno.
int loopback_up_in_child();

}  // namespace sp
