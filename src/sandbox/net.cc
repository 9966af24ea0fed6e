// Brings lo up with one ioctl; a new network namespace has no other interface, so nothing else is reachable.
#include "sandbox/net.h"

#include <errno.h>
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

}  // namespace sp
