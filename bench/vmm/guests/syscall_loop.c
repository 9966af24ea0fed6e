// Benchmark guest: argv[1] round trips of a trivial syscall (getppid), or with argv[2] == "fault",
// of a #UD handled by a SIGILL handler that steps over it. Freestanding, static.
typedef unsigned long u64;
static long sys4(long n, u64 a, u64 b, u64 c, u64 d) {
  long r;
  register u64 r10 __asm__("r10") = d;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return r;
}
struct ksigaction { void* handler; u64 flags; void (*restorer)(void); u64 mask; };
extern void restorer(void);
__asm__(".text\nrestorer:\n mov $15, %eax\n syscall\n hlt\n");
static void on_ill(int sig, void* si, u64* uc) { (void)sig, (void)si; uc[5 + 16] += 2; }  // REG_RIP += 2 (ud2)

void cmain(u64* sp) {
  char** argv = (char**)(sp + 1);
  u64 n = 0;
  for (const char* p = argv[1]; p && *p; ++p) n = n * 10 + (u64)(*p - '0');
  if (sp[0] > 2 && argv[2][0] == 'f') {
    struct ksigaction sa = {(void*)on_ill, 0x04000004, restorer, 0};
    sys4(13, 4, (u64)&sa, 0, 8);
    for (u64 i = 0; i < n; ++i) __asm__ volatile("ud2");
  } else {
    for (u64 i = 0; i < n; ++i) sys4(110, 0, 0, 0, 0);
  }
  sys4(231, 0, 0, 0, 0);
}
__asm__(".text\n.global _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call cmain\n hlt\n");
