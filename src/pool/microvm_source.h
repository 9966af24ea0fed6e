// The micro-VM tier's SandboxSource: the process tier's adapter (ProcessSource: spawner and reaper
// threads, hello handling, rings) driving `sandpool vmm-template` instead of the Python template.
// Each sandbox is a VMM process isolated like a process-tier clone, running a copy-on-write clone
// of the pool's template VM whose guest fd 3 is the session's socket (src/vmm/README.md "Pools").
#pragma once

#include "pool/process_source.h"

namespace sp::pool {

// `sandpool_exe`: our binary (the template is `sandpool vmm-template`).
ProcessSourceOptions microvm_source_options(const PoolSettings& settings, ProcessSourceOptions base,
                                            const std::string& sandpool_exe);

class MicroVmSource : public ProcessSource {
 public:
  MicroVmSource(uv_loop_t* loop, const PoolSettings& settings, ProcessSourceOptions base, const std::string& sandpool_exe)
      : ProcessSource(loop, settings, microvm_source_options(settings, std::move(base), sandpool_exe)) {}
};

}  // namespace sp::pool
