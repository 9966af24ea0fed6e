// ELF loader: copies a static, PIE or dynamic (PT_INTERP) x86-64 program and its interpreter into
// guest memory and builds the initial stack (argv, envp, auxv) as Linux's execve would. Not a
// runtime linker: ld-linux itself runs in the guest and maps the libraries through mmap.
#pragma once

#include <elf.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "util/result.h"
#include "vmm/address_space.h"
#include "vmm/memory.h"

namespace sp::vmm {

// The validated headers of one ELF file.
struct ElfFile {
  Elf64_Ehdr header{};
  std::vector<Elf64_Phdr> phdrs;
  std::string interp;  // PT_INTERP path, empty for a static program
  uint64_t min_vaddr = 0, max_vaddr = 0;  // page-aligned extent of the PT_LOAD segments
};

// Reads and checks the ELF header and program headers of fd (64-bit, little-endian, x86-64,
// ET_EXEC or ET_DYN, sane counts, sizes and offsets). Errors: ENOEXEC with the failing check.
Result<ElfFile> read_elf(int fd);

struct LoadRequest {
  std::string path;  // host path of the program (opened by the VMM)
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  std::array<uint8_t, 16> random{};  // AT_RANDOM bytes
  uint32_t hwcap = 0;
  uint32_t uid = 0, gid = 0;
  uint64_t sysinfo_ehdr = 0;  // AT_SYSINFO_EHDR (the vDSO), 0 for none
};

struct LoadedProgram {
  uint64_t start_rip = 0;      // first instruction: the interpreter's entry, or the program's
  uint64_t start_rsp = 0;      // points at argc
  uint64_t program_entry = 0;  // AT_ENTRY
  uint64_t program_bias = 0;   // load bias of the program (0 for ET_EXEC)
  uint64_t interp_base = 0;    // AT_BASE, 0 without an interpreter
  uint64_t phdr_addr = 0;      // AT_PHDR
  uint64_t brk_start = 0;      // first byte after the program image, page-aligned
  uint64_t stack_low = 0;      // lowest byte of the stack mapping
  uint64_t guard = 0;          // the 2 MiB below the stack that no mapping may use
};

// 1. maps the program's PT_LOAD segments (ET_EXEC at their address, ET_DYN at kPieBase);
// 2. maps the PT_INTERP interpreter, if any, top-down in the mmap window;
// 3. sets the mmap window between the program's brk and the stack and maps the stack;
// 4. writes strings, argv, envp and auxv on the stack.
// Every mapped range is recorded in `as`. Memory must be fresh (zero).
Result<LoadedProgram> load_program(GuestMemory& mem, AddressSpace& as, const LoadRequest& req);

}  // namespace sp::vmm
