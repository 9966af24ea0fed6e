// The guest's descriptor table: guest fd numbers -> descriptors the VMM owns. The guest never
// names a VMM descriptor directly, so it cannot close or reach the KVM, memfd or log descriptors.
#pragma once

#include <vector>

#include "util/result.h"
#include "util/unique_fd.h"

namespace sp::vmm {

class FdTable {
 public:
  static constexpr int kMaxFds = 1024;  // also the RLIMIT_NOFILE the guest is told

  // Host descriptor behind guest fd `fd`, or -1 when it is not open (any int is accepted).
  int host(long fd) const {
    return fd >= 0 && fd < static_cast<long>(fds_.size()) ? fds_[fd].get() : -1;
  }
  // Installs `host` at the lowest free guest fd >= min_fd. Errors: EMFILE, EINVAL.
  Result<int> install(UniqueFd host, long min_fd = 0);
  // Installs `host` at exactly `fd`, closing what was there (dup2 semantics). Errors: EBADF.
  Status install_at(long fd, UniqueFd host);
  // Closes guest fd `fd`. Errors: EBADF.
  Status close(long fd);
  int count() const;

 private:
  std::vector<UniqueFd> fds_;
};

}  // namespace sp::vmm
