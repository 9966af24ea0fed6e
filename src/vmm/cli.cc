// `sandpool vm-run [options] -- PROGRAM ARGS...`: runs one program in a micro-VM with the caller's
// stdin/stdout/stderr; exits with the guest's status (128+N when signal N ended it).
#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cli.h"
#include "util/log.h"
#include "vmm/syscalls/dispatch.h"
#include "vmm/vm.h"

extern char** environ;

namespace sp {
namespace {

vmm::Vm* g_running_vm = nullptr;  // for the signal handlers below; set only while run() runs
int g_timeouts = 0;

void on_interrupt_signal(int) {
  if (g_running_vm) g_running_vm->interrupt();
}

void on_timeout(int) {
  // First expiry: SIGINT to the guest (KeyboardInterrupt). Second: give up on it.
  if (++g_timeouts >= 2) _exit(124);
  if (g_running_vm) g_running_vm->interrupt();
}

// Bytes of [base, base+len) that this process owns alone: anonymous pages (copy-on-write copies of
// template pages and fresh zero pages), from /proc/self/smaps "Anonymous". Template pages that are
// only read are shared page cache (shmem) and not counted, even though smaps may call them
// Private_Dirty once the template's own mapping is gone.
uint64_t private_bytes(const uint8_t* base, uint64_t len) {
  FILE* f = std::fopen("/proc/self/smaps", "re");
  if (!f) return 0;
  char line[512];
  bool in_range = false;
  uint64_t total_kib = 0;
  auto lo = reinterpret_cast<uintptr_t>(base), hi = lo + len;
  while (std::fgets(line, sizeof line, f)) {
    uintptr_t a, b;
    if (std::sscanf(line, "%lx-%lx ", &a, &b) == 2 && std::strchr(line, '-') < std::strchr(line, ' ')) {
      in_range = a >= lo && b <= hi;
      continue;
    }
    unsigned long kib;
    if (in_range && (std::sscanf(line, "Anonymous: %lu kB", &kib) == 1)) total_kib += kib;
  }
  std::fclose(f);
  return total_kib * 1024;
}

// --clones N: run the program as a template until its first read of stdin, freeze it, then run N
// clones, each reading the same stdin text from a pipe of its own. Prints timings per clone.
int run_clones(const vmm::VmConfig& base_cfg, int clones) {
  std::string input;
  char buf[65536];
  // SAFETY: reads into a local buffer of its own size.
  for (ssize_t n; (n = read(0, buf, sizeof buf)) > 0;) input.append(buf, static_cast<size_t>(n));
  vmm::VmConfig cfg = base_cfg;
  cfg.freeze_on_read_fd = 0;
  uint64_t t0 = vmm::now_ns();
  auto tmpl = vmm::Vm::create(cfg);
  if (!tmpl.ok()) {
    std::fprintf(stderr, "vm-run: %s\n", tmpl.error().message().c_str());
    return 1;
  }
  auto ex = tmpl.value()->run();
  if (!ex.ok() || !ex->frozen) {
    std::fprintf(stderr, "vm-run: the template did not reach a read of stdin\n");
    return 1;
  }
  uint64_t t1 = vmm::now_ns();
  auto snap = tmpl.value()->snapshot();
  if (!snap.ok()) {
    std::fprintf(stderr, "vm-run: %s\n", snap.error().message().c_str());
    return 1;
  }
  uint64_t t2 = vmm::now_ns();
  tmpl.value().reset();
  std::fprintf(stderr, "vm-run: template ready in %.3f ms (%llu syscalls), snapshot %.3f ms\n", (t1 - t0) / 1e6,
               static_cast<unsigned long long>(ex->syscalls), (t2 - t1) / 1e6);
  int rc = 0;
  // Finished clones are kept until the end, as a pool would hold them: tearing a VM down right
  // before the next clone is made would measure KVM's teardown, not the clone.
  std::vector<std::unique_ptr<vmm::Vm>> done;
  for (int i = 0; i < clones; ++i) {
    int p[2];  // the clone's stdin: a pipe holding the request text, write end closed
    if (pipe2(p, O_CLOEXEC) < 0) return 1;
    ssize_t w = write(p[1], input.data(), input.size());
    close(p[1]);
    if (w != static_cast<ssize_t>(input.size())) return 1;
    uint64_t c0 = vmm::now_ns();
    auto vm = vmm::Vm::clone(*snap.value(), {{0, p[0]}});
    close(p[0]);
    if (!vm.ok()) {
      std::fprintf(stderr, "vm-run: clone: %s\n", vm.error().message().c_str());
      return 1;
    }
    uint64_t c1 = vmm::now_ns();
    auto r = vm.value()->run();
    uint64_t c2 = vmm::now_ns();
    if (!r.ok()) return 1;
    const auto& mem = vm.value()->guest().mem;
    std::fprintf(stderr, "vm-run: clone %d: clone %.3f ms, run %.3f ms, total %.3f ms, syscalls %llu, private %llu KiB, "
                 "memslots %u (%llu MiB), exit %d\n",
                 i, (c1 - c0) / 1e6, (c2 - c1) / 1e6, (c2 - c0) / 1e6, static_cast<unsigned long long>(r->syscalls),
                 static_cast<unsigned long long>(private_bytes(mem.host_base(), mem.size()) / 1024),
                 vm.value()->memslots().slot_count(),
                 static_cast<unsigned long long>(vm.value()->memslots().mapped_bytes() >> 20), r->exit_code);
    rc = r->exit_code;
    done.push_back(std::move(vm.value()));
  }
  return rc;
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: sandpool vm-run [options] -- PROGRAM [ARGS...]\n"
               "  --memory MIB          guest memory (default 1024; 64..16384, rounded up to 2 MiB)\n"
               "  --trace               log every guest syscall to stderr\n"
               "  --stats               print timings and syscall counts to stderr at exit\n"
               "  --env NAME=VALUE      add to the guest environment (repeatable)\n"
               "  --inherit-env         start from this process's environment (default: PATH, LANG, HOME)\n"
               "  --fd GUEST=HOST       give the guest descriptor GUEST as a copy of HOST (repeatable)\n"
               "  --timeout-ms N        send the guest SIGINT after N ms, give up (exit 124) after 2N\n"
               "  --backend NAME        trap path: triple-fault (default) or cpl0-stub\n"
               "  --no-vdso             no guest vDSO: every clock read is a VM exit\n"
               "  --clones N            freeze the program at its first read of stdin, then run N\n"
               "                        copy-on-write clones of it, each given this stdin's text\n");
}

}  // namespace

int vm_run_main(int argc, char** argv) {
  vmm::VmConfig cfg;
  bool inherit_env = false, stats = false;
  std::vector<std::string> extra_env;
  long timeout_ms = 0;
  int clones = 0;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&](const char* what) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "vm-run: %s needs a value\n", what);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--") { ++i; break; }
    if (a == "--help" || a == "-h") { usage(stdout); return 0; }
    if (a == "--memory") {
      long mib = std::atol(need("--memory"));
      cfg.memory_bytes = (static_cast<uint64_t>(mib < 0 ? 0 : mib) * (1ull << 20) + (2ull << 20) - 1) & ~((2ull << 20) - 1);
    } else if (a == "--trace") {
      cfg.trace = true;
    } else if (a == "--clones") {
      clones = std::atoi(need("--clones"));
    } else if (a == "--no-vdso") {
      cfg.vdso = false;
    } else if (a == "--stats") {
      stats = true;
    } else if (a == "--env") {
      extra_env.push_back(need("--env"));
    } else if (a == "--inherit-env") {
      inherit_env = true;
    } else if (a == "--fd") {
      int gfd, hfd;
      if (std::sscanf(need("--fd"), "%d=%d", &gfd, &hfd) != 2) { usage(stderr); return 2; }
      cfg.fds.emplace_back(gfd, hfd);
    } else if (a == "--timeout-ms") {
      timeout_ms = std::atol(need("--timeout-ms"));
    } else if (a == "--backend") {
      if (!vmm::parse_backend(need("--backend"), &cfg.backend)) { usage(stderr); return 2; }
    } else {
      std::fprintf(stderr, "vm-run: unknown option %s\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (i >= argc) { usage(stderr); return 2; }
  cfg.program = argv[i];
  for (; i < argc; ++i) cfg.argv.push_back(argv[i]);
  if (inherit_env) {
    for (char** e = environ; *e; ++e) cfg.envp.push_back(*e);
  } else {
    cfg.envp = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp"};
  }
  for (auto& e : extra_env) {  // --env replaces a variable of the same name
    std::string key = e.substr(0, e.find('=') + 1);
    std::erase_if(cfg.envp, [&](const std::string& v) { return v.rfind(key, 0) == 0; });
    cfg.envp.push_back(e);
  }

  if (clones > 0) return run_clones(cfg, clones);
  auto vm = vmm::Vm::create(cfg);
  if (!vm.ok()) {
    std::fprintf(stderr, "vm-run: %s\n", vm.error().message().c_str());
    return vm.error().code == ENOENT && std::strstr(vm.error().where, "kvm") ? 77 : 1;
  }
  // Ctrl-C and the timeout become SIGINT in the guest; no SA_RESTART so KVM_RUN returns EINTR.
  // SAFETY: the handlers only call Vm::interrupt() (async-signal-safe) or _exit().
  struct sigaction sa {};
  sa.sa_handler = on_interrupt_signal;
  sigaction(SIGINT, &sa, nullptr);
  sa.sa_handler = on_timeout;
  sigaction(SIGALRM, &sa, nullptr);
  g_running_vm = vm.value().get();
  if (timeout_ms > 0) {
    itimerval it{};
    it.it_value = timeval{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    it.it_interval = it.it_value;
    setitimer(ITIMER_REAL, &it, nullptr);
  }
  auto ex = vm.value()->run();
  g_running_vm = nullptr;
  if (!ex.ok()) {
    std::fprintf(stderr, "vm-run: %s\n", ex.error().message().c_str());
    return 1;
  }
  if (stats) {
    const auto& t = vm.value()->timings();
    std::fprintf(stderr,
                 "vm-run: backend %s, create %.3f ms, load %.3f ms, first exit %.3f ms, run %.3f ms, "
                 "syscalls %llu, unknown %llu, exit %d, in KVM_RUN %.3f ms over %llu exits\n",
                 vmm::backend_name(cfg.backend), t.create_ns / 1e6, t.load_ns / 1e6, t.first_exit_ns / 1e6,
                 t.run_ns / 1e6, static_cast<unsigned long long>(ex->syscalls),
                 static_cast<unsigned long long>(ex->unknown_syscalls), ex->exit_code, t.kvm_run_ns / 1e6,
                 static_cast<unsigned long long>(t.exits));
    const auto& slots = vm.value()->memslots();
    std::fprintf(stderr, "vm-run: memslots %u (%llu of %llu MiB given to KVM, %llu first-touch faults)\n",
                 slots.slot_count(), static_cast<unsigned long long>(slots.mapped_bytes() >> 20),
                 static_cast<unsigned long long>(vm.value()->guest().mem.size() >> 20),
                 static_cast<unsigned long long>(t.memslot_faults));
    // Shadow-paging work inside KVM_RUN (kvm-pvm: 3-9 us per fault).
    if (auto ks = vm.value()->vcpu().stats({"pf_taken", "pf_fixed", "tlb_flush"}); ks.ok())
      std::fprintf(stderr, "vm-run: kvm pf_taken %llu, pf_fixed %llu, tlb_flush %llu\n",
                   static_cast<unsigned long long>(ks.value()[0]), static_cast<unsigned long long>(ks.value()[1]),
                   static_cast<unsigned long long>(ks.value()[2]));
    // The most frequent syscalls: where the exits went.
    const auto& h = vm.value()->guest().syscall_histogram;
    std::vector<std::pair<uint32_t, int>> top;
    for (int nr = 0; nr < static_cast<int>(h.size()); ++nr)
      if (h[nr]) top.emplace_back(h[nr], nr);
    std::sort(top.rbegin(), top.rend());
    std::string line = "vm-run: top syscalls:";
    for (size_t k = 0; k < top.size() && k < 10; ++k)
      line += " " + std::string(vmm::syscall_name(top[k].second)) + "=" + std::to_string(top[k].first);
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  return ex->exit_code;
}

}  // namespace sp
