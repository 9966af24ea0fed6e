// ELF loader on real Debian binaries (static busybox, dynamic python3 through ld-linux) and on
// malformed files.
#include "vmm/loader.h"

#include <fcntl.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace sp::vmm;

namespace {

sp::UniqueFd open_ro(const char* path) { return sp::UniqueFd(open(path, O_RDONLY | O_CLOEXEC)); }

// A temporary file holding `bytes`; removed at scope end.
struct TempFile {
  std::string path;
  explicit TempFile(const std::vector<uint8_t>& bytes) {
    char tmpl[] = "/tmp/sp-loader-test-XXXXXX";
    int fd = mkstemp(tmpl);
    path = tmpl;
    CHECK(write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    close(fd);
  }
  ~TempFile() { unlink(path.c_str()); }
};

std::vector<uint8_t> head_of(const char* path, size_t n) {
  std::vector<uint8_t> b(n);
  sp::UniqueFd fd = open_ro(path);
  REQUIRE(pread(fd.get(), b.data(), n, 0) == static_cast<ssize_t>(n));
  return b;
}

std::map<uint64_t, uint64_t> read_auxv(const GuestMemory& mem, uint64_t sp) {
  uint64_t argc = 0;
  REQUIRE(mem.read(sp, &argc));
  uint64_t p = sp + 8 * (argc + 2);
  uint64_t v = 1;
  while (mem.read(p, &v) && v != 0) p += 8;  // envp
  p += 8;
  std::map<uint64_t, uint64_t> aux;
  uint64_t kv[2];
  while (mem.copy_in(kv, p, 16) && kv[0] != AT_NULL) aux[kv[0]] = kv[1], p += 16;
  return aux;
}

}  // namespace

TEST_CASE("read_elf: static busybox, dynamic python3, ld-linux") {
  auto bb = read_elf(open_ro("/bin/busybox").get());
  REQUIRE(bb.ok());
  CHECK(bb->header.e_type == ET_EXEC);
  CHECK(bb->interp.empty());
  CHECK(bb->min_vaddr >= kUserBase);
  auto py = read_elf(open_ro("/usr/bin/python3").get());
  REQUIRE(py.ok());
  CHECK(py->interp == "/lib64/ld-linux-x86-64.so.2");
  auto ld = read_elf(open_ro("/lib64/ld-linux-x86-64.so.2").get());
  REQUIRE(ld.ok());
  CHECK(ld->header.e_type == ET_DYN);
  CHECK(ld->min_vaddr == 0);
}

TEST_CASE("read_elf refuses malformed files") {
  TempFile text(std::vector<uint8_t>{'#', '!', '/', 'b', 'i', 'n', '/', 's', 'h', '\n'});
  CHECK(read_elf(open_ro(text.path.c_str()).get()).error().code == ENOEXEC);
  TempFile truncated(head_of("/bin/busybox", 64));  // header only: phdrs missing
  CHECK(read_elf(open_ro(truncated.path.c_str()).get()).error().code == ENOEXEC);
  auto b = head_of("/bin/busybox", 4096);
  b[EI_CLASS] = ELFCLASS32;
  TempFile cls(b);
  CHECK(read_elf(open_ro(cls.path.c_str()).get()).error().code == ENOEXEC);
  b = head_of("/bin/busybox", 4096);
  reinterpret_cast<Elf64_Ehdr*>(b.data())->e_phnum = 60000;
  TempFile many(b);
  CHECK(read_elf(open_ro(many.path.c_str()).get()).error().code == ENOEXEC);
  b = head_of("/bin/busybox", 4096);
  auto* eh = reinterpret_cast<Elf64_Ehdr*>(b.data());
  auto* ph = reinterpret_cast<Elf64_Phdr*>(b.data() + eh->e_phoff);
  for (int i = 0; i < eh->e_phnum; ++i)
    if (ph[i].p_type == PT_LOAD) ph[i].p_vaddr = ~0ull - 10;  // wraps
  TempFile wrap(b);
  CHECK(read_elf(open_ro(wrap.path.c_str()).get()).error().code == ENOEXEC);
}

TEST_CASE("load_program: busybox stack, auxv and image") {
  auto m = GuestMemory::create(256ull << 20);
  REQUIRE(m.ok());
  AddressSpace as;
  LoadRequest req;
  req.path = "/bin/busybox";
  req.argv = {"busybox", "echo", "hi"};
  req.envp = {"A=1", "B=2"};
  std::memset(req.random.data(), 0xab, 16);
  auto lp = load_program(m.value(), as, req);
  REQUIRE(lp.ok());
  const GuestMemory& mem = m.value();
  CHECK(lp->start_rsp % 16 == 0);
  CHECK(lp->interp_base == 0);
  CHECK(lp->start_rip == lp->program_entry);
  uint64_t argc = 0, argv1 = 0;
  CHECK(mem.read(lp->start_rsp, &argc));
  CHECK(argc == 3);
  CHECK(mem.read(lp->start_rsp + 16, &argv1));
  std::string s;
  CHECK(mem.read_cstring(argv1, 100, &s).ok());
  CHECK(s == "echo");
  auto aux = read_auxv(mem, lp->start_rsp);
  CHECK(aux[AT_PAGESZ] == 4096);
  CHECK(aux[AT_ENTRY] == lp->program_entry);
  CHECK(aux[AT_PHDR] == lp->phdr_addr);
  CHECK(aux[AT_PHENT] == sizeof(Elf64_Phdr));
  uint8_t rnd[16];
  CHECK(mem.copy_in(rnd, aux[AT_RANDOM], 16));
  CHECK(rnd[0] == 0xab);
  CHECK(mem.read_cstring(aux[AT_PLATFORM], 16, &s).ok());
  CHECK(s == "x86_64");
  CHECK(mem.read_cstring(aux[AT_EXECFN], 100, &s).ok());
  CHECK(s == "/bin/busybox");
  uint32_t magic = 0;
  CHECK(mem.read(0x400000, &magic));
  CHECK(std::memcmp(&magic, ELFMAG, 4) == 0);
  CHECK(as.is_mapped(0x400000, 4096));
  CHECK(as.is_mapped(lp->stack_low, kStackBytes));
}

TEST_CASE("load_program: python3 goes through ld-linux") {
  auto m = GuestMemory::create(256ull << 20);
  REQUIRE(m.ok());
  AddressSpace as;
  LoadRequest req;
  req.path = "/usr/bin/python3";
  req.argv = {"python3"};
  auto lp = load_program(m.value(), as, req);
  REQUIRE(lp.ok());
  CHECK(lp->interp_base != 0);
  CHECK(lp->start_rip != lp->program_entry);
  CHECK(lp->start_rip > lp->interp_base);
  CHECK(lp->interp_base > lp->brk_start);
  CHECK(lp->interp_base < lp->stack_low);
  auto aux = read_auxv(m.value(), lp->start_rsp);
  CHECK(aux[AT_BASE] == lp->interp_base);
  uint32_t magic = 0;
  CHECK(m.value().read(lp->interp_base, &magic));
  CHECK(std::memcmp(&magic, ELFMAG, 4) == 0);
}

TEST_CASE("load_program refuses a program that does not fit and a huge argv") {
  auto m = GuestMemory::create(64ull << 20);
  REQUIRE(m.ok());
  AddressSpace as;
  LoadRequest req;
  req.path = "/bin/busybox";
  req.argv = {"busybox", std::string(6 << 20, 'a')};
  CHECK(load_program(m.value(), as, req).error().code == E2BIG);
  req.path = "/nonexistent/program";
  CHECK(load_program(m.value(), as, req).error().code == ENOENT);
}
