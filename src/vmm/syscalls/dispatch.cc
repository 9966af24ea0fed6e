// Syscall table construction and the dispatcher with its counters and trace.
#include "vmm/syscalls/dispatch.h"

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
  } else {
    ++g.unknown_syscalls;
    global_counters().unknown_syscalls.fetch_add(1, std::memory_order_relaxed);
    r = -ENOSYS;
  }
  if (g.trace) {
    const char* name = syscall_name(args.nr);
    if (r == kNoReturnValue) {
      LOG_INFO("vm: %s(%llu)", name, static_cast<unsigned long long>(args.nr));
    } else {
      LOG_INFO("vm: %s[%llu](0x%llx, 0x%llx, 0x%llx, 0x%llx) = %lld (rip 0x%llx)", name, static_cast<unsigned long long>(args.nr),
               static_cast<unsigned long long>(args.a[0]), static_cast<unsigned long long>(args.a[1]),
               static_cast<unsigned long long>(args.a[2]), static_cast<unsigned long long>(args.a[3]),
               static_cast<long long>(r), static_cast<unsigned long long>(g.regs ? g.regs->rip : 0));
    }
  }
  return r;
}

}  // namespace sp::vmm
