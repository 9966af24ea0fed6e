// ELF parsing, segment copying and the initial process stack.
#include "vmm/loader.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "vmm/layout.h"

namespace sp::vmm {
namespace {

constexpr uint64_t page_down(uint64_t v) { return v & ~(kPageSize - 1); }
constexpr uint64_t page_up(uint64_t v) { return (v + kPageSize - 1) & ~(kPageSize - 1); }

Status pread_full(int fd, void* dst, size_t len, uint64_t off) {
  auto* p = static_cast<uint8_t*>(dst);
  while (len > 0) {
    // SAFETY: p..p+len is the caller's checked destination (VMM struct or guest range).
    ssize_t n = pread(fd, p, len, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read ELF");
    if (n == 0) return Error{ENOEXEC, "ELF file truncated"};
    p += n, len -= static_cast<size_t>(n), off += static_cast<uint64_t>(n);
  }
  return {};
}

// Copies the PT_LOAD segments of `elf` at load bias `bias`; records them in `as`.
Status map_segments(GuestMemory& mem, AddressSpace& as, int fd, const ElfFile& elf, uint64_t bias) {
  // The image as a whole must land on free guest memory (not on the vDSO or another image).
  if (!mem.user_range_ok(elf.min_vaddr + bias, elf.max_vaddr - elf.min_vaddr) ||
      !as.is_free(elf.min_vaddr + bias, elf.max_vaddr - elf.min_vaddr))
    return Error{ENOMEM, "ELF image overlaps guest memory in use"};
  for (const Elf64_Phdr& ph : elf.phdrs) {
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
    uint64_t start = page_down(ph.p_vaddr + bias);
    uint64_t end = page_up(ph.p_vaddr + bias + ph.p_memsz);
    if (!mem.user_range_ok(start, end - start)) return Error{ENOMEM, "ELF segment outside guest memory"};
    // SAFETY: [vaddr+bias, +filesz) is inside [start, end), checked against guest memory above.
    SP_TRY(pread_full(fd, mem.user_ptr(ph.p_vaddr + bias, ph.p_filesz), ph.p_filesz, ph.p_offset));
    as.add(start, end - start);
  }
  return {};
}

uint64_t phdr_address(const ElfFile& elf, uint64_t bias) {
  for (const Elf64_Phdr& ph : elf.phdrs)
    if (ph.p_type == PT_PHDR) return ph.p_vaddr + bias;
  for (const Elf64_Phdr& ph : elf.phdrs) {
    if (ph.p_type == PT_LOAD && elf.header.e_phoff >= ph.p_offset && elf.header.e_phoff < ph.p_offset + ph.p_filesz)
      return ph.p_vaddr + bias + (elf.header.e_phoff - ph.p_offset);
  }
  return 0;
}

}  // namespace

Result<ElfFile> read_elf(int fd) {
  ElfFile elf;
  Elf64_Ehdr& h = elf.header;
  SP_TRY(pread_full(fd, &h, sizeof h, 0));
  if (std::memcmp(h.e_ident, ELFMAG, SELFMAG) != 0) return Error{ENOEXEC, "not an ELF file"};
  if (h.e_ident[EI_CLASS] != ELFCLASS64 || h.e_ident[EI_DATA] != ELFDATA2LSB) return Error{ENOEXEC, "ELF not 64-bit LE"};
  if (h.e_machine != EM_X86_64) return Error{ENOEXEC, "ELF not x86-64"};
  if (h.e_type != ET_EXEC && h.e_type != ET_DYN) return Error{ENOEXEC, "ELF not executable"};
  if (h.e_phentsize != sizeof(Elf64_Phdr) || h.e_phnum == 0 || h.e_phnum > 64) return Error{ENOEXEC, "ELF phdrs"};
  elf.phdrs.resize(h.e_phnum);
  SP_TRY(pread_full(fd, elf.phdrs.data(), h.e_phnum * sizeof(Elf64_Phdr), h.e_phoff));
  bool any_load = false;
  elf.min_vaddr = ~0ull;
  for (const Elf64_Phdr& ph : elf.phdrs) {
    if (ph.p_type == PT_INTERP) {
      if (ph.p_filesz < 2 || ph.p_filesz > 4096) return Error{ENOEXEC, "ELF PT_INTERP size"};
      std::string s(ph.p_filesz, '\0');
      SP_TRY(pread_full(fd, s.data(), s.size(), ph.p_offset));
      if (s.back() != '\0') return Error{ENOEXEC, "ELF PT_INTERP not terminated"};
      elf.interp = s.c_str();
    }
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_filesz > ph.p_memsz || ph.p_offset + ph.p_filesz < ph.p_offset ||
        ph.p_vaddr + ph.p_memsz < ph.p_vaddr || ph.p_vaddr + ph.p_memsz > kMaxMemoryBytes)
      return Error{ENOEXEC, "ELF PT_LOAD bounds"};
    any_load = true;
    if (page_down(ph.p_vaddr) < elf.min_vaddr) elf.min_vaddr = page_down(ph.p_vaddr);
    if (page_up(ph.p_vaddr + ph.p_memsz) > elf.max_vaddr) elf.max_vaddr = page_up(ph.p_vaddr + ph.p_memsz);
  }
  if (!any_load) return Error{ENOEXEC, "ELF without PT_LOAD"};
  if (h.e_type == ET_EXEC && elf.min_vaddr < kUserBase) return Error{ENOEXEC, "ELF loads below the user base"};
  return elf;
}

Result<LoadedProgram> load_program(GuestMemory& mem, AddressSpace& as, const LoadRequest& req) {
  LoadedProgram out;
  UniqueFd fd(open(req.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error("open program");
  SP_TRY_ASSIGN(ElfFile elf, read_elf(fd.get()));
  out.program_bias = elf.header.e_type == ET_DYN ? kPieBase - elf.min_vaddr : 0;
  SP_TRY(map_segments(mem, as, fd.get(), elf, out.program_bias));
  out.program_entry = elf.header.e_entry + out.program_bias;
  out.phdr_addr = phdr_address(elf, out.program_bias);
  out.brk_start = elf.max_vaddr + out.program_bias;

  // Stack at the top of memory, a 2 MiB guard below it (kept out of every mapping; the caller makes
  // it not present in the page tables), and the mmap window between brk and the guard.
  uint64_t top = mem.size();
  out.stack_low = top - kStackBytes;
  out.guard = out.stack_low - kHugePage;
  as.add(out.stack_low, kStackBytes);
  if (out.brk_start + 2 * kHugePage >= out.guard) return Error{ENOMEM, "program too large for guest memory"};
  as.set_window(out.brk_start, out.guard);

  out.start_rip = out.program_entry;
  if (!elf.interp.empty()) {
    UniqueFd ifd(open(elf.interp.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ifd) return errno_error("open ELF interpreter");
    SP_TRY_ASSIGN(ElfFile ie, read_elf(ifd.get()));
    if (ie.header.e_type != ET_DYN || !ie.interp.empty()) return Error{ENOEXEC, "ELF interpreter type"};
    uint64_t base = as.find_free(ie.max_vaddr - ie.min_vaddr);
    if (base == 0) return Error{ENOMEM, "no room for the ELF interpreter"};
    SP_TRY(map_segments(mem, as, ifd.get(), ie, base - ie.min_vaddr));
    out.interp_base = base - ie.min_vaddr;
    out.start_rip = ie.header.e_entry + out.interp_base;
  }

  // Strings at the top of the stack, then the pointer block, 16-byte aligned at argc.
  uint64_t sp = top;
  auto push_bytes = [&](const void* p, size_t n) -> uint64_t {
    sp -= n;
    mem.copy_out(sp, p, n);  // SAFETY (all pushes): the stack is checked as a whole below.
    return sp;
  };
  uint64_t total = 0;
  for (const auto& s : req.argv) total += s.size() + 1;
  for (const auto& s : req.envp) total += s.size() + 1;
  total += req.path.size() + 64 + (req.argv.size() + req.envp.size() + 64) * 8;
  if (total > kStackBytes / 2) return Error{E2BIG, "argv and envp too large"};
  uint64_t execfn = push_bytes(req.path.c_str(), req.path.size() + 1);
  uint64_t platform = push_bytes("x86_64", 7);
  uint64_t random = push_bytes(req.random.data(), req.random.size());
  std::vector<uint64_t> argv_ptrs, envp_ptrs;
  for (const auto& s : req.argv) argv_ptrs.push_back(push_bytes(s.c_str(), s.size() + 1));
  for (const auto& s : req.envp) envp_ptrs.push_back(push_bytes(s.c_str(), s.size() + 1));

  std::vector<uint64_t> words;
  words.push_back(req.argv.size());
  words.insert(words.end(), argv_ptrs.begin(), argv_ptrs.end());
  words.push_back(0);
  words.insert(words.end(), envp_ptrs.begin(), envp_ptrs.end());
  words.push_back(0);
  const uint64_t auxv[][2] = {
      {AT_HWCAP, req.hwcap}, {AT_PAGESZ, kPageSize}, {AT_CLKTCK, 100}, {AT_PHDR, out.phdr_addr},
      {AT_PHENT, sizeof(Elf64_Phdr)}, {AT_PHNUM, elf.header.e_phnum}, {AT_BASE, out.interp_base},
      {AT_FLAGS, 0}, {AT_ENTRY, out.program_entry}, {AT_UID, req.uid}, {AT_EUID, req.uid},
      {AT_GID, req.gid}, {AT_EGID, req.gid}, {AT_SECURE, 0}, {AT_RANDOM, random}, {AT_HWCAP2, 0},
      {AT_EXECFN, execfn}, {AT_PLATFORM, platform}, {51 /* AT_MINSIGSTKSZ */, 4096},
      {req.sysinfo_ehdr ? uint64_t{AT_SYSINFO_EHDR} : uint64_t{AT_IGNORE}, req.sysinfo_ehdr}, {AT_NULL, 0}};
  for (const auto& kv : auxv) words.push_back(kv[0]), words.push_back(kv[1]);
  sp = (sp - words.size() * 8) & ~uint64_t{15};
  if (!mem.copy_out(sp, words.data(), words.size() * 8)) return Error{EFAULT, "initial stack"};
  out.start_rsp = sp;
  return out;
}

}  // namespace sp::vmm
