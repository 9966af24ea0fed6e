// The guest's vDSO: clock_gettime, gettimeofday, time, clock_getres and getcpu answered inside the
// guest from the TSC and a data page the VMM refreshes at every exit, so the most frequent syscalls
// of an interpreter cost ~20 ns instead of a VM exit. Built freestanding as a tiny shared object
// and embedded in sandpool; not linked into sandpool itself. Unknown clocks fall back to `syscall`.
#include <stdint.h>

// Must match VdsoData in src/vmm/vdso.h; it sits in the page just below the vDSO's ELF header.
struct vdso_data {
  uint64_t tsc_base;  // guest TSC at the moment the bases were taken
  int64_t real_ns;    // CLOCK_REALTIME at tsc_base
  int64_t mono_ns;    // CLOCK_MONOTONIC at tsc_base
  int64_t boot_ns;    // CLOCK_BOOTTIME at tsc_base
  uint64_t mult;      // ns = (tsc - tsc_base) * mult >> 32
  uint32_t enabled;   // 0: always make the syscall
  uint32_t pad;
};

// Guest-owned state in the same page, past what the VMM rewrites: the last monotonic values
// returned, so the clocks never step back when the VMM refreshes the bases.
struct vdso_state {
  int64_t last_mono, last_boot;
};
#define STATE_OFFSET 2048

struct kts { int64_t tv_sec, tv_nsec; };
struct ktv { int64_t tv_sec, tv_usec; };

// The page below our own ELF header, found RIP-relative (no relocation needed).
static inline const volatile struct vdso_data* data(void) {
  const char* ehdr;
  __asm__("lea __ehdr_start(%%rip), %0" : "=r"(ehdr));
  return (const volatile struct vdso_data*)(ehdr - 4096);
}

static inline long sys2(long nr, long a, long b) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
  return r;
}

static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}


// 1 and the time in *ns for the clocks served here, 0 to fall back to the syscall.
static int now_ns(long clk, int64_t* ns) {
  const volatile struct vdso_data* d = data();
  volatile struct vdso_state* st = (volatile struct vdso_state*)((volatile char*)d + STATE_OFFSET);
  if (!d->enabled) return 0;
  uint64_t delta = rdtsc() - d->tsc_base;
  if ((int64_t)delta < 0) delta = 0;
  int64_t since = (int64_t)((__extension__(unsigned __int128)delta * d->mult) >> 32);
  switch (clk) {
    case 0: case 5: *ns = d->real_ns + since; return 1;  // REALTIME, REALTIME_COARSE
    case 1: case 4: case 6:                               // MONOTONIC, _RAW, _COARSE
      *ns = d->mono_ns + since;
      if (*ns < st->last_mono) *ns = st->last_mono;
      st->last_mono = *ns;
      return 1;
    case 7:                                               // BOOTTIME
      *ns = d->boot_ns + since;
      if (*ns < st->last_boot) *ns = st->last_boot;
      st->last_boot = *ns;
      return 1;
    default: return 0;
  }
}

int __vdso_clock_gettime(long clk, struct kts* ts) {
  int64_t ns;
  if (!now_ns(clk, &ns)) return (int)sys2(228, clk, (long)ts);
  ts->tv_sec = ns / 1000000000;
  ts->tv_nsec = ns % 1000000000;
  return 0;
}

int __vdso_gettimeofday(struct ktv* tv, void* tz) {
  int64_t ns;
  if (!now_ns(0, &ns)) return (int)sys2(96, (long)tv, (long)tz);
  if (tv) {
    tv->tv_sec = ns / 1000000000;
    tv->tv_usec = (ns % 1000000000) / 1000;
  }
  if (tz) ((int32_t*)tz)[0] = ((int32_t*)tz)[1] = 0;
  return 0;
}

int64_t __vdso_time(int64_t* t) {
  int64_t ns;
  if (!now_ns(0, &ns)) return sys2(201, (long)t, 0);
  if (t) *t = ns / 1000000000;
  return ns / 1000000000;
}

int __vdso_clock_getres(long clk, struct kts* ts) { return (int)sys2(229, clk, (long)ts); }

int __vdso_getcpu(uint32_t* cpu, uint32_t* node, void* unused) {
  (void)unused;
  if (cpu) *cpu = 0;
  if (node) *node = 0;
  return 0;
}
