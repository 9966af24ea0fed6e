// sandpool's entry point: picks a subcommand from argv[1]; holds no logic of its own.
#include <cstdio>
#include <cstring>

#include "cli.h"

namespace {

struct Command {
  const char* name;
  int (*main)(int, char**);
  const char* help;  // nullptr: internal, not listed
};

constexpr Command kCommands[] = {
    {"serve", sp::serve_main, "run the HTTP server with its sandbox pools"},
    {"sandbox-run", sp::sandbox_run_main, "run one command in a fresh sandbox: sandbox-run [options] -- CMD..."},
    {"vm-run", sp::vm_run_main, "run one program in a micro-VM: vm-run [options] -- PROGRAM ARGS..."},
    {"init", sp::init_main, nullptr},
    {"vmm-template", sp::vmm_template_main, nullptr},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: sandpool COMMAND [options]\n\ncommands:\n");
  for (const Command& c : kCommands) {
    if (c.help) std::fprintf(out, "  %-12s %s\n", c.name, c.help);
  }
  std::fprintf(out, "  %-12s %s\n", "version", "print the version");
  std::fprintf(out, "\n'sandpool COMMAND --help' describes a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "version") == 0 || std::strcmp(argv[1], "--version") == 0) {
    std::printf("sandpool %s\n", SANDPOOL_VERSION);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) == 0) return c.main(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "sandpool: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
