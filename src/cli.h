// Entry points of sandpool's subcommands; main.cc dispatches on argv[1]. Each returns the process exit code.
#pragma once

namespace sp {

int serve_main(int argc, char** argv);        // server.cc: the HTTP server with its pools
int sandbox_run_main(int argc, char** argv);  // sandbox/cli.cc: one command in a fresh sandbox
int init_main(int argc, char** argv);         // sandbox/init.cc: pid 1 inside a sandbox (internal)
int vm_run_main(int argc, char** argv);       // vmm/cli.cc: one program in a micro-VM
int vmm_template_main(int argc, char** argv);  // vmm/pool_template.cc: a micro-VM pool's template (internal)

}  // namespace sp
