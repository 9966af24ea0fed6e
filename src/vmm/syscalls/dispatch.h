// The syscall table: number -> handler, filled by one registration function per family (mem,
// file, fs, proc, time, signal, wait, socket, epoll). Handlers run on the vCPU thread with the guest stopped.
#pragma once

#include <cerrno>
#include <cstdint>

#include "vmm/guest.h"

namespace sp::vmm {

struct SyscallArgs {
  uint64_t nr = 0;
  uint64_t a[6] = {};
};

// A handler returns the value for rax: >= 0 on success, -errno on failure, or kNoReturnValue when
// it has rewritten the guest's registers itself (rt_sigreturn, signal delivery).
using SyscallHandler = int64_t (*)(Guest& g, const SyscallArgs& args);
inline constexpr int64_t kNoReturnValue = INT64_MIN;
inline constexpr int kMaxSyscall = 512;

struct SyscallTable {
  SyscallHandler fn[kMaxSyscall] = {};
  const char* name[kMaxSyscall] = {};
  void add(int nr, const char* n, SyscallHandler h) { fn[nr] = h, name[nr] = n; }
};

void register_mem_syscalls(SyscallTable& t);
void register_file_syscalls(SyscallTable& t);
void register_fs_syscalls(SyscallTable& t);
void register_proc_syscalls(SyscallTable& t);
void register_time_syscalls(SyscallTable& t);
void register_signal_syscalls(SyscallTable& t);
void register_wait_syscalls(SyscallTable& t);
void register_socket_syscalls(SyscallTable& t);
void register_epoll_syscalls(SyscallTable& t);

// sandpool's own call (not Linux's): several system calls for one VM exit, which costs ~25 µs on
// kvm-pvm. rdi = guest address of `count` BatchEntry records, rsi = count (1..kBatchMax), rdx = 0.
// Runs the entries in order through the same handlers (and guest pointer checks) as single calls,
// writes each one's result to its `ret`, stops after the first that fails (ret < 0) or, for write
// and sendto, writes less than asked, and returns how many ran. Allowed: calls that leave the
// guest's registers and signal handling alone: write, lseek, pread64, fcntl F_GETFL/F_SETFL, poll
// with timeout 0, sendto and recvfrom (these may block as single calls do; a kick ends them with
// EINTR); any other entry fails with -EINVAL.
// The call itself: -EFAULT for records outside user memory, -EINVAL for a bad count or flags.
// Used by the agent in the micro-VM (sandpool_agent.py VmBatch); outside the VMM it is ENOSYS.
inline constexpr uint64_t kBatchSyscall = 0x5350;  // "SP"
inline constexpr uint64_t kBatchMax = 8;
struct BatchEntry {
  uint64_t nr;
  uint64_t a[6];
  int64_t ret;
};
static_assert(sizeof(BatchEntry) == 64);

// Runs syscall args.nr for the guest; unknown numbers return -ENOSYS and are counted. With
// g.trace set, logs one line per call (a batch: one line per entry and one for the batch).
int64_t dispatch_syscall(Guest& g, const SyscallArgs& args);
const char* syscall_name(uint64_t nr);

// Helpers shared by the families.
inline int64_t host_ret(long rc) { return rc < 0 ? -static_cast<int64_t>(errno) : rc; }
inline constexpr uint64_t page_up(uint64_t v) { return (v + 4095) & ~uint64_t{4095}; }
inline constexpr bool page_aligned(uint64_t v) { return (v & 4095) == 0; }

}  // namespace sp::vmm
