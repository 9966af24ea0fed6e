// Guest descriptor table operations.
#include "vmm/fd_table.h"

#include <cerrno>

namespace sp::vmm {

Result<int> FdTable::install(UniqueFd host, long min_fd) {
  if (min_fd < 0 || min_fd >= kMaxFds) return Error{EINVAL, "fd table min"};
  for (long i = min_fd; i < kMaxFds; ++i) {
    if (i >= static_cast<long>(fds_.size())) fds_.resize(i + 1);
    if (!fds_[i]) {
      fds_[i] = std::move(host);
      return static_cast<int>(i);
    }
  }
  return Error{EMFILE, "fd table full"};
}

Status FdTable::install_at(long fd, UniqueFd host) {
  if (fd < 0 || fd >= kMaxFds) return Error{EBADF, "fd table index"};
  if (fd >= static_cast<long>(fds_.size())) fds_.resize(fd + 1);
  fds_[fd] = std::move(host);
  return {};
}

Status FdTable::close(long fd) {
  if (host(fd) < 0) return Error{EBADF, "close"};
  fds_[fd].reset();
  return {};
}

int FdTable::count() const {
  int n = 0;
  for (const auto& f : fds_) n += f.valid() ? 1 : 0;
  return n;
}

}  // namespace sp::vmm
