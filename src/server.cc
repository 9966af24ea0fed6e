// Placeholder for `sandpool serve` until the HTTP foundation lands (issue 2).
#include <cstdio>

#include "cli.h"

namespace sp {

int serve_main(int, char**) {
  std::fprintf(stderr, "sandpool serve: not built yet\n");
  return 1;
}

}  // namespace sp
