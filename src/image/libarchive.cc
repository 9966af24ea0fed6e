// dlopen of libarchive and its function table (see libarchive.h).
#include "image/libarchive.h"

#include <dlfcn.h>

#include <string>

#include "util/log.h"

namespace sp::image {
namespace {

constexpr const char* kSonames[] = {"libarchive.so.13", "libarchive.so"};
LibArchive g_table;

template <class F>
bool bind(void* lib, const char* name, F* out, std::string* missing) {
  // SAFETY: `name` is the libarchive function whose declared type (archive.h) F is.
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (*out == nullptr && missing->empty()) *missing = name;
  return *out != nullptr;
}

Status load() {
  void* lib = nullptr;
  std::string why;
  for (const char* soname : kSonames) {
    // Never closed: the table lives as long as the process.
    lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    if (why.empty()) why = dlerror();
  }
  if (!lib) {
    LOG_ERROR("image: cannot load libarchive (%s)", why.c_str());
    return Error{ENOSYS, "image import: cannot load libarchive"};
  }
  LibArchive& t = g_table;
  std::string missing;
  bind(lib, "archive_read_new", &t.read_new, &missing);
  bind(lib, "archive_read_free", &t.read_free, &missing);
  bind(lib, "archive_read_open", &t.read_open, &missing);
  bind(lib, "archive_read_next_header", &t.read_next_header, &missing);
  bind(lib, "archive_read_data_block", &t.read_data_block, &missing);
  bind(lib, "archive_read_support_filter_gzip", &t.read_support_filter_gzip, &missing);
  bind(lib, "archive_read_support_filter_zstd", &t.read_support_filter_zstd, &missing);
  bind(lib, "archive_read_support_format_raw", &t.read_support_format_raw, &missing);
  bind(lib, "archive_read_support_format_tar", &t.read_support_format_tar, &missing);
  bind(lib, "archive_filter_code", &t.filter_code, &missing);
  bind(lib, "archive_entry_pathname", &t.entry_pathname, &missing);
  bind(lib, "archive_entry_filetype", &t.entry_filetype, &missing);
  bind(lib, "archive_entry_hardlink", &t.entry_hardlink, &missing);
  bind(lib, "archive_entry_symlink", &t.entry_symlink, &missing);
  bind(lib, "archive_entry_perm", &t.entry_perm, &missing);
  bind(lib, "archive_entry_uid", &t.entry_uid, &missing);
  bind(lib, "archive_entry_gid", &t.entry_gid, &missing);
  bind(lib, "archive_entry_size", &t.entry_size, &missing);
  bind(lib, "archive_entry_size_is_set", &t.entry_size_is_set, &missing);
  if (!missing.empty()) {
    LOG_ERROR("image: libarchive has no %s", missing.c_str());
    return Error{ENOSYS, "image import: libarchive lacks a function"};
  }
  return {};
}

}  // namespace

const LibArchive& libarchive() { return g_table; }

Status load_libarchive() {
  static const Status loaded = load();  // thread-safe one-time initialisation
  return loaded;
}

}  // namespace sp::image
