// libarchive, loaded when an image is first imported instead of linked into the binary: linked,
// its dependencies (libxml2, ICU, nettle, lzma, ...) cost every start of the binary ≈ 3 ms of
// dynamic loading (`sandpool vm-run`, `sandpool version`, template processes), and only image import
// uses it. The table holds the functions unpack.cc calls, with the header's own types.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include "util/result.h"

namespace sp::image {

struct LibArchive {
  decltype(&::archive_read_new) read_new;
  decltype(&::archive_read_free) read_free;
  decltype(&::archive_read_open) read_open;
  decltype(&::archive_read_next_header) read_next_header;
  decltype(&::archive_read_data_block) read_data_block;
  decltype(&::archive_read_support_filter_gzip) read_support_filter_gzip;
  decltype(&::archive_read_support_filter_zstd) read_support_filter_zstd;
  decltype(&::archive_read_support_format_raw) read_support_format_raw;
  decltype(&::archive_read_support_format_tar) read_support_format_tar;
  decltype(&::archive_filter_code) filter_code;
  decltype(&::archive_entry_pathname) entry_pathname;
  decltype(&::archive_entry_filetype) entry_filetype;
  decltype(&::archive_entry_hardlink) entry_hardlink;
  decltype(&::archive_entry_symlink) entry_symlink;
  decltype(&::archive_entry_perm) entry_perm;
  decltype(&::archive_entry_uid) entry_uid;
  decltype(&::archive_entry_gid) entry_gid;
  decltype(&::archive_entry_size) entry_size;
  decltype(&::archive_entry_size_is_set) entry_size_is_set;
};

// Loads libarchive (libarchive.so.13) once per process, thread-safely; later calls return the same
// result (ENOSYS when the library or a function is missing; the reason is logged).
Status load_libarchive();
// The table; only after load_libarchive() succeeded in this thread or one it synchronised with.
const LibArchive& libarchive();

}  // namespace sp::image
