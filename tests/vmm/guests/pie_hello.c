// A libc program for the loader tests, built as dynamic PIE and as static-pie: prints its argv, one
// environment variable, where it was loaded relative to its auxv, and a clock and random read.
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/random.h>
#include <time.h>

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) printf("arg %s\n", argv[i]);
  printf("env %s\n", getenv("SP_TEST") ? getenv("SP_TEST") : "(none)");
  printf("entry-in-image %d\n", getauxval(AT_ENTRY) > getauxval(AT_PHDR) - 4096);
  struct timespec ts;
  unsigned char r[8];
  printf("clock %d random %d\n", clock_gettime(CLOCK_MONOTONIC, &ts) == 0 && ts.tv_sec > 0,
         getrandom(r, sizeof r, 0) == (ssize_t)sizeof r);
  return 3;
}
