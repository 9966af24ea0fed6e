// Signal-driven I/O (O_ASYNC, SIGIO) for guest descriptors; see async_io.h.
#include "vmm/syscalls/async_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>

namespace sp::vmm {
namespace {

// Per vCPU thread: the host's notification flag and the kvm_run to stop.
thread_local std::atomic<bool> t_io_ready{false};
thread_local kvm_run* t_run = nullptr;

void on_io_signal(int) {
  t_io_ready.store(true, std::memory_order_relaxed);
  // SAFETY: t_run is this thread's own kvm_run page, set while run() is active; a byte store.
  if (t_run) __atomic_store_n(&t_run->immediate_exit, 1, __ATOMIC_SEQ_CST);
}

// Points host descriptor hfd's signal-driven I/O at the calling thread.
int own(int hfd) {
  f_owner_ex owner{F_OWNER_TID, static_cast<pid_t>(gettid())};
  // SAFETY: fcntl on a descriptor owned by the guest's fd table, with a live f_owner_ex.
  if (fcntl(hfd, F_SETOWN_EX, &owner) < 0 || fcntl(hfd, F_SETSIG, io_signal()) < 0) return -errno;
  return 0;
}

}  // namespace

int io_signal() { return SIGRTMIN + 4; }

void install_io_signal_handler() {
  static const bool done = [] {
    struct sigaction sa {};
    sa.sa_handler = on_io_signal;  // no SA_RESTART: a blocked host call returns EINTR
    return sigaction(io_signal(), &sa, nullptr) == 0;
  }();
  (void)done;
}

int64_t set_async(Guest& g, long fd, int hfd, bool on) {
  install_io_signal_handler();
  int fl = fcntl(hfd, F_GETFL);
  if (fl < 0) return -errno;
  auto it = std::find(g.async_fds.begin(), g.async_fds.end(), static_cast<int>(fd));
  if (on) {
    if (int r = own(hfd); r < 0) return r;
    if (fcntl(hfd, F_SETFL, fl | O_ASYNC) < 0) return -errno;
    if (it == g.async_fds.end()) g.async_fds.push_back(static_cast<int>(fd));
  } else {
    if (fcntl(hfd, F_SETFL, fl & ~O_ASYNC) < 0) return -errno;
    if (it != g.async_fds.end()) g.async_fds.erase(it);
  }
  return 0;
}

void attach_async_io(Guest& g, kvm_run* run) {
  t_run = run;
  for (int fd : g.async_fds) {
    int h = g.fds.host(fd);
    if (h >= 0) (void)own(h);
  }
}

void detach_async_io() { t_run = nullptr; }

bool take_io_ready() { return t_io_ready.exchange(false, std::memory_order_relaxed); }

bool io_ready_pending() { return t_io_ready.load(std::memory_order_relaxed); }

}  // namespace sp::vmm
