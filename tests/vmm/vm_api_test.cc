// The src/vmm API as the server uses it: interrupt() from another thread, a template frozen at its
// first read of the agent fd, snapshot(), clone() without descriptors then attach_fd(), and the
// process-wide counters. Needs /dev/kvm: exits 77 (skip) without it.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "vmm/vm.h"

namespace {

int failures = 0;

void check(bool ok, const char* what, const std::string& detail = "") {
  std::printf("%s %s %s\n", ok ? "ok  " : "FAIL", what, ok ? "" : detail.c_str());
  if (!ok) ++failures;
}

std::string drain(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

void interrupt_from_another_thread() {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return check(false, "pipe");
  sp::vmm::VmConfig cfg;
  cfg.program = "/usr/bin/python3";
  cfg.argv = {"python3", "-S", "-c", "try:\n x = 0\n while True: x += 1\nexcept KeyboardInterrupt: print('caught')"};
  cfg.fds = {{0, 0}, {1, out[1]}, {2, 2}};
  auto vm = sp::vmm::Vm::create(cfg);
  close(out[1]);
  if (!vm.ok()) return check(false, "create", vm.error().message());
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    vm.value()->interrupt();
  });
  auto ex = vm.value()->run();
  t.join();
  vm.value().reset();  // closes the VM's copy of the pipe's write end
  std::string got = drain(out[0]);
  close(out[0]);
  check(ex.ok() && ex->exit_code == 0 && got == "caught\n", "interrupt() from another thread -> KeyboardInterrupt",
        got);
}

void template_snapshot_clone_attach() {
  sp::vmm::VmConfig cfg;
  cfg.program = "/usr/bin/python3";
  cfg.argv = {"python3", "-S", "-c", "import os\nbase = 40\nreq = os.read(3, 100)\nos.write(1, b'%d\\n' % (base + int(req)))"};
  int placeholder[2];  // the template's agent fd: an empty pipe it never gets to read
  if (pipe2(placeholder, O_CLOEXEC) != 0) return check(false, "pipe");
  cfg.fds = {{0, 0}, {1, 1}, {2, 2}, {3, placeholder[0]}};
  cfg.freeze_on_read_fd = 3;
  cfg.memory_bytes = 256ull << 20;
  auto tmpl = sp::vmm::Vm::create(cfg);
  close(placeholder[0]);
  close(placeholder[1]);
  if (!tmpl.ok()) return check(false, "template create", tmpl.error().message());
  auto ex = tmpl.value()->run();
  check(ex.ok() && ex->frozen, "template freezes at its first read of fd 3");
  auto snap = tmpl.value()->snapshot();
  if (!snap.ok()) return check(false, "snapshot", snap.error().message());
  tmpl.value().reset();
  uint64_t started = sp::vmm::global_counters().vms_started.load();
  for (int i = 1; i <= 3; ++i) {
    auto c = sp::vmm::Vm::clone(*snap.value(), {});  // made ahead, bound later
    if (!c.ok()) return check(false, "clone", c.error().message());
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return check(false, "pipe");
    std::string req = std::to_string(i);
    if (write(in[1], req.data(), req.size()) != static_cast<ssize_t>(req.size())) return check(false, "write");
    close(in[1]);
    check(c.value()->attach_fd(3, in[0]).ok() && c.value()->attach_fd(1, out[1]).ok(), "attach_fd");
    close(in[0]);
    close(out[1]);
    auto r = c.value()->run();
    c.value().reset();  // closes the clone's copy of the write end
    std::string got = drain(out[0]);
    close(out[0]);
    check(r.ok() && r->exit_code == 0 && got == std::to_string(40 + i) + "\n", "clone answers its own request", got);
  }
  check(sp::vmm::global_counters().vms_started.load() - started == 3, "vms_started counts clones");
}

}  // namespace

int main() {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    std::printf("SKIP: /dev/kvm is not usable here; the micro-VM API test needs KVM\n");
    return 77;
  }
  close(fd);
  interrupt_from_another_thread();
  template_snapshot_clone_attach();
  return failures == 0 ? 0 : 1;
}
