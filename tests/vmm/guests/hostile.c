// A hostile guest for the micro-VM tests: freestanding (no libc), static, one probe per mode
// (argv[1]). Each probe prints what it saw; the test script checks the output and exit status.
// Modes that are meant to survive print "ok <mode>" and exit 0.
typedef unsigned long u64;
typedef long i64;

static i64 sys6(i64 nr, u64 a, u64 b, u64 c, u64 d, u64 e, u64 f) {
  i64 ret;
  register u64 r10 __asm__("r10") = d;
  register u64 r8 __asm__("r8") = e;
  register u64 r9 __asm__("r9") = f;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
#define SYS(nr, ...) sys6_wrap(nr, __VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define sys6_wrap(nr, a, b, c, d, e, f, ...) sys6(nr, (u64)(a), (u64)(b), (u64)(c), (u64)(d), (u64)(e), (u64)(f))

static u64 slen(const char* s) { u64 n = 0; while (s[n]) ++n; return n; }
static void puts_(const char* s) { SYS(1, 1, s, slen(s)); }
static void put_num(i64 v) {
  char buf[24];
  int i = 23;
  int neg = v < 0;
  u64 u = neg ? -(u64)v : (u64)v;
  buf[i] = 0;
  do { buf[--i] = (char)('0' + u % 10); u /= 10; } while (u);
  if (neg) buf[--i] = '-';
  puts_(buf + i);
}
static int streq(const char* a, const char* b) { while (*a && *a == *b) ++a, ++b; return *a == *b; }
static __attribute__((noreturn)) void exit_(int code) { for (;;) SYS(231, code); }

static int failures;
static void expect(const char* what, i64 got, i64 want) {
  if (got != want) {
    puts_("FAIL "); puts_(what); puts_(": got "); put_num(got); puts_(" want "); put_num(want); puts_("\n");
    ++failures;
  }
}

#define EFAULT 14
#define EINVAL 22
#define ENOMEM 12
#define ENOSYS 38
#define EBADF 9

// Bad pointers and huge lengths: every call must fail with the right errno; none may crash the VMM.
static void probe_pointers(void) {
  char ok[4] = "ab\n";
  expect("write sys area", SYS(1, 1, 0x1000, 16), -EFAULT);
  expect("write null", SYS(1, 1, 0, 1), -EFAULT);
  expect("write beyond memory", SYS(1, 1, 0x7fff00000000ul, 8), -EFAULT);
  expect("write kernel addr", SYS(1, 1, 0xffff800000000000ul, 8), -EFAULT);
  expect("write huge len", SYS(1, 1, ok, 1ul << 62), -EFAULT);
  expect("write wrap len", SYS(1, 1, ok, ~0ul), -EFAULT);
  expect("read into page tables", SYS(0, 0, 0x1000, 4096), -EFAULT);
  expect("read into stub", SYS(0, 0, 0x18000, 16), -EFAULT);
  expect("open bad path", SYS(257, -100, 0x1000, 0, 0), -EFAULT);
  expect("open unterminated", SYS(257, -100, 0x7fff00000000ul, 0, 0), -EFAULT);
  u64 iov[2] = {0x2000, 16};
  expect("writev bad iov base", SYS(20, 1, iov, 1), -EFAULT);
  expect("writev bad iov array", SYS(20, 1, 0x3000, 1), -EFAULT);
  expect("writev huge count", SYS(20, 1, iov, 1ul << 40), -EINVAL);
  expect("fstat bad buf", SYS(5, 1, 0x1000), -EFAULT);
  expect("clock_gettime bad", SYS(228, 0, 0x1008), -EFAULT);
  expect("getrandom huge", SYS(318, ok, 1ul << 50, 0), -EFAULT);
  expect("mmap fixed sys area", SYS(9, 0x1000, 4096, 3, 0x32, -1, 0), -ENOMEM);
  expect("mmap fixed beyond", SYS(9, 0x7fff00000000ul, 4096, 3, 0x32, -1, 0), -ENOMEM);
  expect("mmap huge", SYS(9, 0, 1ul << 62, 3, 0x22, -1, 0), -EINVAL);
  expect("munmap sys area", SYS(11, 0, 0x200000), -EINVAL);
  expect("mremap bad", SYS(25, 0x1000, 4096, 8192, 1, 0), -EFAULT);
  expect("brk into sys area", SYS(12, 0x1000) == 0x1000, 0);
  expect("rt_sigaction bad", SYS(13, 10, 0x1000, 0, 8), -EFAULT);
  expect("pipe2 bad", SYS(293, 0x1000, 0), -EFAULT);
  expect("poll bad", SYS(7, 0x1000, 4, 0), -EFAULT);
  expect("poll huge", SYS(7, ok, 1ul << 40, 0), -EINVAL);
  expect("futex bad", SYS(202, 0x1000, 0, 0, 0), -EFAULT);
  expect("close vmm fd", SYS(3, 1000), -EBADF);
  expect("dup2 huge", SYS(33, 1, 1ul << 40), -EBADF);
  expect("read bad fd", SYS(0, -5, ok, 1), -EBADF);
  expect("uname bad", SYS(63, 0x1000), -EFAULT);
  expect("sched_getaffinity huge", SYS(204, 0, 1ul << 40, ok), -EFAULT);
  expect("open /proc/self/mem", SYS(257, -100, "/proc/self/mem", 2, 0) < 0, 1);
  expect("open /proc/self/fd/3", SYS(257, -100, "/proc/self/fd/3", 0, 0) < 0, 1);
  expect("open /dev/kvm", SYS(257, -100, "/dev/kvm", 2, 0) < 0, 1);
  if (failures) exit_(1);
  puts_("ok pointers\n");
  exit_(0);
}

// Raw syscall numbers: unknown ones return ENOSYS; threads, fork and exec a clear ENOSYS.
static void probe_syscalls(void) {
  expect("nr 400", SYS(400, 1, 2, 3), -ENOSYS);
  expect("nr 511", SYS(511, 0), -ENOSYS);
  expect("nr 512", SYS(512, 0), -ENOSYS);
  expect("nr 100000", SYS(100000, 0), -ENOSYS);
  expect("nr -1", SYS(-1, 0), -ENOSYS);
  expect("nr 1<<40", SYS(1l << 40, 0), -ENOSYS);
  expect("socket", SYS(41, 2, 1, 0), -ENOSYS);
  expect("clone", SYS(56, 0x11, 0, 0, 0, 0), -ENOSYS);
  expect("fork", SYS(57, 0), -ENOSYS);
  expect("execve", SYS(59, "/bin/sh", 0, 0), -ENOSYS);
  expect("clone3", SYS(435, 0, 0), -ENOSYS);
  if (failures) exit_(1);
  puts_("ok syscalls\n");
  exit_(0);
}

// Signals, freestanding: rt_sigaction with our own restorer.
struct ksigaction { void* handler; u64 flags; void (*restorer)(void); u64 mask; };
extern void restorer(void);
__asm__(".text\nrestorer:\n mov $15, %eax\n syscall\n hlt\n");
#define SA_SIGINFO 4
#define SA_RESTORER 0x04000000
#define SA_ONSTACK 0x08000000

static void install(int sig, void* fn) {
  struct ksigaction sa = {fn, SA_SIGINFO | SA_RESTORER | SA_ONSTACK, restorer, 0};
  expect("rt_sigaction", SYS(13, sig, &sa, 0, 8), 0);
}

struct siginfo_min { int signo, errno_, code, pad; u64 addr; };
struct ucontext_min { u64 flags, link, ss_sp, ss_flags, ss_size; u64 gregs[23]; };

static void on_segv_report(int sig, struct siginfo_min* si, void* uc) {
  (void)uc;
  puts_("signal "); put_num(sig); puts_(" addr "); put_num((i64)si->addr); puts_("\n");
  exit_(42);
}

static void on_segv_fault_again(int sig, struct siginfo_min* si, void* uc) {
  (void)sig, (void)si, (void)uc;
  puts_("in handler\n");
  *(volatile int*)0x1000 = 1;  // faults again while SIGSEGV is blocked: the guest must die
  puts_("FAIL survived\n");
}

static void on_ill_skip(int sig, struct siginfo_min* si, struct ucontext_min* uc) {
  (void)si;
  puts_("skip "); put_num(sig); puts_("\n");
  uc->gregs[16] += 2;  // REG_RIP: step over ud2 / div (both 2 bytes here)
}

static volatile int zero_divisor;
static char altstack[16384];

// Vector state (AVX2 ymm, AVX-512 zmm where the CPU has it) must survive VM exits.
static void probe_vector(void) {
  unsigned a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  int avx2 = (b >> 5) & 1, avx512 = (b >> 16) & 1;
  unsigned char in[64], out[64];
  for (int i = 0; i < 64; ++i) in[i] = (unsigned char)i, out[i] = 0;
  if (avx2) {
    __asm__ volatile("vmovdqu (%0), %%ymm9" ::"r"(in) : "xmm9");
    SYS(39, 0);  // an exit to the VMM
    __asm__ volatile("vmovdqu %%ymm9, (%0)" ::"r"(out) : "memory");
    for (int i = 0; i < 32; ++i) expect("ymm9 across an exit", out[i], in[i]);
  }
  if (avx512) {
    __asm__ volatile("vmovdqu64 (%0), %%zmm17" ::"r"(in) : "memory");
    SYS(39, 0);
    __asm__ volatile("vpaddd %%zmm17, %%zmm17, %%zmm18\n vmovdqu64 %%zmm18, (%0)" ::"r"(out) : "memory");
    for (int i = 0; i < 64; i += 4) expect("zmm17 across an exit", *(unsigned*)(out + i), 2 * *(unsigned*)(in + i));
  }
  if (failures) exit_(1);
  puts_("ok vector avx2="); put_num(avx2); puts_(" avx512="); put_num(avx512); puts_("\n");
  exit_(0);
}

static void run_mode(const char* m) {
  if (streq(m, "vector")) probe_vector();
  if (streq(m, "pointers")) probe_pointers();
  if (streq(m, "syscalls")) probe_syscalls();
  if (streq(m, "pagetable")) { *(volatile u64*)0x1000 = 0; puts_("FAIL wrote page table\n"); exit_(1); }
  if (streq(m, "gdt")) { *(volatile u64*)0x13000 = 0; puts_("FAIL wrote gdt\n"); exit_(1); }
  if (streq(m, "stub")) { *(volatile u64*)0x18000 = 0; puts_("FAIL wrote stub\n"); exit_(1); }
  if (streq(m, "int80")) { __asm__ volatile("int $0x80"); puts_("FAIL int80 returned\n"); exit_(1); }
  if (streq(m, "int3")) { __asm__ volatile("int3"); puts_("FAIL int3 returned\n"); exit_(1); }
  if (streq(m, "hlt")) { __asm__ volatile("hlt"); puts_("FAIL hlt returned\n"); exit_(1); }
  if (streq(m, "cli")) { __asm__ volatile("cli"); puts_("FAIL cli returned\n"); exit_(1); }
  if (streq(m, "wrmsr")) { __asm__ volatile("wrmsr" :: "c"(0xc0000082), "a"(0), "d"(0)); exit_(1); }
  if (streq(m, "lgdt")) { u64 d[2] = {0, 0}; __asm__ volatile("lgdt %0" :: "m"(d)); exit_(1); }
  if (streq(m, "compat")) {  // far jump to the 32-bit user code selector: must fault
    struct { unsigned off; unsigned short sel; } __attribute__((packed)) target = {0x401000, 0x1b};
    __asm__ volatile("ljmp *%0" ::"m"(target));
    exit_(1);
  }
  if (streq(m, "jump_stub")) { ((void (*)(void))0x18000)(); exit_(1); }
  if (streq(m, "segv_handler")) {
    install(11, (void*)on_segv_report);
    *(volatile int*)0x1234 = 1;
    exit_(1);
  }
  if (streq(m, "fault_in_handler")) {
    install(11, (void*)on_segv_fault_again);
    *(volatile int*)0x1000 = 1;
    exit_(1);
  }
  if (streq(m, "ud2_handler")) {
    u64 ss[3] = {(u64)altstack, 0, sizeof altstack};
    expect("sigaltstack", SYS(131, ss, 0), 0);
    install(4, (void*)on_ill_skip);
    install(8, (void*)on_ill_skip);
    __asm__ volatile("ud2");
    int q = 0;
    __asm__ volatile("xor %%edx, %%edx\n mov $7, %%eax\n div %%ecx\n" : "=a"(q) : "c"(zero_divisor) : "rdx");
    if (failures) exit_(1);
    puts_("ok ud2_handler\n");
    exit_(0);
  }
  if (streq(m, "forged_sigreturn")) {  // a frame whose rip is not canonical
    u64 frame[64] = {0};
    frame[5 + 16] = 0x8000000000000000ul;  // uc_mcontext.rip
    frame[5 + 15] = (u64)&frame[32];       // rsp
    __asm__ volatile("mov %0, %%rsp\n mov $15, %%eax\n syscall" :: "r"(frame) : "memory");
    exit_(1);
  }
  if (streq(m, "bad_sigreturn")) { __asm__ volatile("mov $0x1000, %%rsp\n mov $15, %%eax\n syscall" ::: "memory"); exit_(1); }
  if (streq(m, "bad_stack_signal")) {
    install(11, (void*)on_segv_report);
    __asm__ volatile("mov $0x1000, %%rsp\n movl $1, 0\n" ::: "memory");  // fault with an unusable stack
    exit_(1);
  }
  puts_("unknown mode\n");
  exit_(2);
}

void cmain(u64* sp) {
  u64 argc = sp[0];
  char** argv = (char**)(sp + 1);
  if (argc < 2) { puts_("usage: hostile MODE\n"); exit_(2); }
  run_mode(argv[1]);
  exit_(3);
}

__asm__(".text\n.global _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call cmain\n hlt\n");
