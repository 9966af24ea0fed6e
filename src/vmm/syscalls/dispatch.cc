// Syscall table construction and the dispatcher with its counters and trace.
#include "vmm/syscalls/dispatch.h"

#include <fcntl.h>

#include <cstddef>

#include "util/log.h"

namespace sp::vmm {
namespace {

const SyscallTable& table() {
  static const SyscallTable t = [] {
    SyscallTable s;
    register_mem_syscalls(s);
    register_file_syscalls(s);
    register_fs_syscalls(s);
    register_proc_syscalls(s);
    register_time_syscalls(s);
    register_signal_syscalls(s);
    register_wait_syscalls(s);
    register_socket_syscalls(s);
    register_epoll_syscalls(s);
    return s;
  }();
  return t;
}

void trace_call(const Guest& g, const SyscallArgs& args, int64_t r);

// The allowlist of kBatchSyscall (dispatch.h): calls that leave the guest's registers and signal
// handling alone.
bool batchable(const SyscallArgs& e) {
  switch (e.nr) {
    case 1:   // write
    case 8:   // lseek
    case 17:  // pread64
    case 44:  // sendto
    case 45:  // recvfrom
      return true;
    case 72:  // fcntl (F_SETOWN only records the guest's SIGIO owner)
      return e.a[1] == F_GETFL || e.a[1] == F_SETFL || e.a[1] == F_SETOWN;
    case 7:  // poll
      return e.a[2] == 0;
    default: return false;
  }
}

int64_t run_batch(Guest& g, const SyscallArgs& args) {
  const uint64_t addr = args.a[0], count = args.a[1];
  if (count == 0 || count > kBatchMax || args.a[2] != 0) return -EINVAL;
  BatchEntry e[kBatchMax];
  if (!g.mem.copy_in(e, addr, count * sizeof(BatchEntry))) return -EFAULT;
  const SyscallTable& t = table();
  uint64_t done = 0;
  while (done < count) {
    BatchEntry& b = e[done];
    SyscallArgs one;
    one.nr = b.nr;
    for (int i = 0; i < 6; ++i) one.a[i] = b.a[i];
    if (batchable(one)) {
      ++g.syscall_histogram[one.nr];
      b.ret = t.fn[one.nr](g, one);
    } else {
      b.ret = -EINVAL;
    }
    if (g.trace) trace_call(g, one, b.ret);
    ++done;
    const bool short_write = (b.nr == 1 || b.nr == 44) && static_cast<uint64_t>(b.ret) < b.a[2];
    if (b.ret < 0 || short_write) break;
  }
  // Only the ret words change: copy each back (the guest may have other data beside the records).
  for (uint64_t i = 0; i < done; ++i)
    if (!g.mem.copy_out(addr + i * sizeof(BatchEntry) + offsetof(BatchEntry, ret), &e[i].ret, sizeof e[i].ret))
      return -EFAULT;
  return static_cast<int64_t>(done);
}

void trace_call(const Guest& g, const SyscallArgs& args, int64_t r) {
  const char* name = args.nr == kBatchSyscall ? "sandpool_batch" : syscall_name(args.nr);
  if (r == kNoReturnValue) {
    LOG_INFO("vm: %s(%llu)", name, static_cast<unsigned long long>(args.nr));
  } else {
    LOG_INFO("vm: %s[%llu](0x%llx, 0x%llx, 0x%llx, 0x%llx) = %lld (rip 0x%llx)", name, static_cast<unsigned long long>(args.nr),
             static_cast<unsigned long long>(args.a[0]), static_cast<unsigned long long>(args.a[1]),
             static_cast<unsigned long long>(args.a[2]), static_cast<unsigned long long>(args.a[3]),
             static_cast<long long>(r), static_cast<unsigned long long>(g.regs ? g.regs->rip : 0));
  }
}

}  // namespace

VmCounters& global_counters() {
  static VmCounters c;
  return c;
}

const char* syscall_name(uint64_t nr) {
  return nr < kMaxSyscall && table().name[nr] ? table().name[nr] : "?";
}

int64_t dispatch_syscall(Guest& g, const SyscallArgs& args) {
  ++g.syscall_count;
  global_counters().syscalls.fetch_add(1, std::memory_order_relaxed);
  const SyscallTable& t = table();
  int64_t r;
  if (args.nr < kMaxSyscall && t.fn[args.nr]) {
    ++g.syscall_histogram[args.nr];
    r = t.fn[args.nr](g, args);
  } else if (args.nr == kBatchSyscall) {
    r = run_batch(g, args);
  } else {
    ++g.unknown_syscalls;
    global_counters().unknown_syscalls.fetch_add(1, std::memory_order_relaxed);
    r = -ENOSYS;
  }
  if (g.trace) trace_call(g, args, r);
  return r;
}

}  // namespace sp::vmm
