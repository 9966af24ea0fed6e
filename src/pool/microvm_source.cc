// MicroVmSource: the options that turn ProcessSource into the micro-VM tier.
#include "pool/microvm_source.h"

#include <algorithm>
#include <cstdlib>

#include "vmm/layout.h"

namespace sp::pool {

ProcessSourceOptions microvm_source_options(const PoolSettings& settings, ProcessSourceOptions base,
                                            const std::string& sandpool_exe) {
  // Guest memory: the pool's memory limit less room for the VMM itself (its heap and KVM's
  // metadata and shadow page tables are charged to the same cgroup): 64 MiB, or a quarter of small
  // limits; in 2 MiB units, at least 128 MiB. A guest that writes all of its memory (copying every
  // template page too) then still fits the cgroup, and runs out with MemoryError instead.
  uint64_t mib = settings.memory_bytes >> 20;
  mib = mib >= 512 ? mib - 64 : mib * 3 / 4;
  if (mib < 128) mib = 128;
  mib = std::min<uint64_t>(mib, vmm::kMaxMemoryBytes >> 20);  // the VMM's largest guest
  mib &= ~uint64_t{1};
  base.template_cmd = {sandpool_exe, "vmm-template", "--vm-memory-mib", std::to_string(mib)};
  // The template's environment is fixed by the spawner: pass the debug switch as an argument.
  if (const char* d = getenv("SANDPOOL_VMM_DEBUG")) base.template_cmd.insert(base.template_cmd.end(), {"--debug", d});
  base.tier = "microvm";
  // The warm-up execute after the Hello (ProcessSource::send_warm_up): its copied guest pages
  // (≈ 160 KiB) keep an idle micro-VM session at 2.7 MiB private (budget 3 MiB, issue 6), and a
  // session's first print(1) takes 1.4-1.5 ms instead of 3.3-3.4 (the faults of the request path).
  base.warm_up_execute = true;
  // What a VMM child allocates before its request stays charged to the template's cgroup: its
  // KVM VM, vCPU, memslot metadata and namespaces (≈ 1.1–1.7 MiB), and the guest pages its agent
  // wrote while it ran ahead to its warm-up (≈ 2.5 MiB; src/vmm/README.md "Pools"): 3.7–4.2 MiB
  // measured per idle session (bench/vmm/pool_bench.cc).
  base.template_memory_per_session_bytes = 6ull << 20;
  // Each VMM child makes its own network namespace before its request (pool_template.cc).
  base.netns_ahead = false;
  // Requests go straight to the VMM child the template made ahead (one hop less).
  base.direct_spares = true;
  return base;
}

}  // namespace sp::pool
