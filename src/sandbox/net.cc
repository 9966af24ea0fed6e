// Brings lo up with one ioctl; a new network namespace has no other interface, so nothing else is reachable.
#include "sandbox/net.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace sp {

int loopback_up_in_child() {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  std::memcpy(ifr.ifr_name, "lo", 3);
  int rc = 0;
  // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq on our stack.
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    rc = errno;
  } else {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) rc = errno;
  }
  close(s);
  return rc;
}

Result<UniqueFd> make_isolated_netns() {
  UniqueFd home(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!home) return errno_error("open own netns");
  // Only this thread moves (a thread may unshare its network namespace alone).
  if (unshare(CLONE_NEWNET) != 0) return errno_error("unshare(CLONE_NEWNET)");
  UniqueFd made(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  int err = made ? loopback_up_in_child() : errno;
  if (setns(home.get(), CLONE_NEWNET) != 0) {
    // Cannot happen with a valid fd; a thread stuck in the wrong netns must not go on.
    abort();
  }
  if (err) return Error{err, "new netns: lo up"};
  return made;
}

}  // namespace sp
