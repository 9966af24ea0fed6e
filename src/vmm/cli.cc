// Placeholder for `sandpool vm-run` until the micro-VM core lands (issue 6).
#include <cstdio>

#include "cli.h"

namespace sp {

int vm_run_main(int, char**) {
  std::fprintf(stderr, "sandpool vm-run: not built yet\n");
  return 1;
}

}  // namespace sp
