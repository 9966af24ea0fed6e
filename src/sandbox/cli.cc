// Placeholder for `sandpool sandbox-run` and `sandpool init` until the process sandbox lands (issue 3).
#include <cstdio>

#include "cli.h"

namespace sp {

int sandbox_run_main(int, char**) {
  std::fprintf(stderr, "sandpool sandbox-run: not built yet\n");
  return 1;
}

int init_main(int, char**) {
  std::fprintf(stderr, "sandpool init: not built yet\n");
  return 1;
}

}  // namespace sp
