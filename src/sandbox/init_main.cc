// sandpool-init: the same init as `sandpool init` (init.cc), linked statically so that it runs in any rootfs.
//
// A sandbox over an image (--rootfs) may have no glibc loader at /lib64, or a different
// one; a static init needs none. Spawner::create() prefers this binary when it sits
// next to sandpool (build tree: src/sandbox/) and falls back to /proc/self/exe.
#include "cli.h"

int main(int argc, char** argv) { return sp::init_main(argc, argv); }
