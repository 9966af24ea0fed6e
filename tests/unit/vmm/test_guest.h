// A Guest without a vCPU for driving syscall handlers directly: 64 MiB of memory, brk at 8 MiB,
// the mmap window [16 MiB, 56 MiB), the stack above it, and a fake kvm_run for sregs writes.
#pragma once

#include <linux/kvm.h>

#include "vmm/guest.h"
#include "vmm/syscalls/dispatch.h"

namespace sp::vmm::testing {

struct TestGuest {
  Guest g;
  kvm_run run{};
  kvm_regs regs{};
  static constexpr uint64_t kBrk = 8ull << 20, kLow = 16ull << 20, kHigh = 56ull << 20;
  static constexpr uint64_t kScratch = 4ull << 20;  // a mapped user page for arguments

  TestGuest() {
    g.mem = GuestMemory::create(64ull << 20).value();
    g.as.set_window(kLow, kHigh);
    g.as.add(kHigh, g.mem.size() - kHigh);
    g.as.add(kScratch, 1 << 20);
    g.brk_start = g.brk_cur = kBrk;
    g.run = &run;
    g.regs = &regs;
    g.exe_path = "/usr/bin/python3";
    regs.rsp = g.mem.size() - 4096;
  }
  int64_t call(uint64_t nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0, uint64_t a4 = 0,
               uint64_t a5 = 0) {
    SyscallArgs s;
    s.nr = nr;
    s.a[0] = a0, s.a[1] = a1, s.a[2] = a2, s.a[3] = a3, s.a[4] = a4, s.a[5] = a5;
    return dispatch_syscall(g, s);
  }
  // Copies a C string to guest scratch memory at offset `off`; returns its guest address.
  uint64_t str(const char* s, uint64_t off = 0) {
    uint64_t at = kScratch + off;
    g.mem.copy_out(at, s, __builtin_strlen(s) + 1);
    return at;
  }
  // A pipe made by the guest's pipe2 (its ends are guest descriptors); false when that failed.
  bool pipe(int pfd[2]) {
    uint64_t at = str("");
    return call(293 /* pipe2 */, at, 0) == 0 && g.mem.copy_in(pfd, at, 2 * sizeof(int));
  }
};

}  // namespace sp::vmm::testing
