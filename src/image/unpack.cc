// Safe tar extraction for image import: every path is walked with openat(O_NOFOLLOW) from
// the root's fd; libarchive only reads and decompresses, it never writes to disk.
#include "image/unpack.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <unordered_set>

#include "image/libarchive.h"
#include "util/sha256.h"

namespace sp::image {
namespace {

constexpr size_t kMaxPathComponents = 256;
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

Error invalid(const char* where) { return Error{kEInvalid, where}; }

// unpack_archive loads the table before anything here runs.
const LibArchive& la() { return libarchive(); }

struct ArchiveReader {
  archive* a = la().read_new();
  ~ArchiveReader() { la().read_free(a); }
};

constexpr size_t kReadBytes = 64 * 1024;

// The input of one archive, read once through two libarchive readers: `outer` decompresses
// the bytes of the fd (gzip/zstd filters, raw format) and `tar` parses what `outer` yields.
// Both stages are hashed on the way, so the digests cover exactly what was unpacked.
struct Stream {
  int fd = -1;
  int64_t max_stored_bytes = -1;
  uint64_t max_tar_bytes = 0;  // set once the tar's end was reached (trailing data bound)
  Sha256 stored_hash, tar_hash;
  uint64_t stored_bytes = 0, tar_bytes = 0;
  archive* outer = nullptr;
  bool uncompressed = false;   // the tar stream is the input itself: one hash serves both
  std::optional<Error> error;  // why a callback failed (reported instead of libarchive's text)
  char buf[kReadBytes];
};

la_ssize_t read_stored(archive*, void* data, const void** out) {
  auto* s = static_cast<Stream*>(data);
  for (;;) {
    ssize_t n = read(s->fd, s->buf, sizeof s->buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s->error = errno_error("image: read archive");
      return -1;
    }
    s->stored_bytes += static_cast<uint64_t>(n);
    if (s->max_stored_bytes >= 0 && s->stored_bytes > static_cast<uint64_t>(s->max_stored_bytes)) {
      s->error = invalid("image: blob size does not match its descriptor");
      return -1;
    }
    s->stored_hash.update(s->buf, static_cast<size_t>(n));
    *out = s->buf;
    return n;
  }
}

la_ssize_t read_tar(archive*, void* data, const void** out) {
  auto* s = static_cast<Stream*>(data);
  const void* block;
  size_t size;
  la_int64_t offset;
  int r = la().read_data_block(s->outer, &block, &size, &offset);
  if (r == ARCHIVE_EOF) return 0;
  if (r != ARCHIVE_OK) {
    if (!s->error) s->error = invalid("image: archive compression is corrupt or truncated");
    return -1;
  }
  if (offset < 0 || static_cast<uint64_t>(offset) != s->tar_bytes) {
    s->error = invalid("image: archive stream has a gap");
    return -1;
  }
  s->tar_bytes += size;
  if (s->max_tar_bytes != 0 && s->tar_bytes > s->max_tar_bytes) {
    s->error = Error{kETooLarge, "image: archive has too much data after the end of its tar"};
    return -1;
  }
  if (!s->uncompressed) s->tar_hash.update(block, size);
  *out = block;
  return static_cast<la_ssize_t>(size);
}

// Opens (and with `create`, makes) every directory of `comps` but the last, without
// following symlinks; returns the fd of the last directory.
Result<UniqueFd> open_parent(int root_dirfd, const std::vector<std::string>& comps, bool create) {
  UniqueFd cur(fcntl(root_dirfd, F_DUPFD_CLOEXEC, 0));
  if (!cur) return errno_error("image: dup root directory fd");
  for (size_t i = 0; i + 1 < comps.size(); ++i) {
    const char* name = comps[i].c_str();
    int fd = openat(cur.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
      if (mkdirat(cur.get(), name, 0755) != 0 && errno != EEXIST) {
        return errno_error("image: create parent directory");
      }
      fd = openat(cur.get(), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
      if (errno == ELOOP || errno == ENOTDIR) {
        return invalid("image: archive path goes through a symlink or a non-directory");
      }
      return errno_error("image: open parent directory");
    }
    cur.reset(fd);
  }
  return cur;
}

// A relative symlink target must not climb above the root from the link's directory.
bool symlink_stays_inside(const std::vector<std::string>& link_comps, std::string_view target) {
  if (!target.empty() && target.front() == '/') return true;  // resolved in the rootfs at run time
  long depth = static_cast<long>(link_comps.size()) - 1;
  size_t pos = 0;
  while (pos <= target.size()) {
    size_t end = target.find('/', pos);
    if (end == std::string_view::npos) end = target.size();
    std::string_view part = target.substr(pos, end - pos);
    if (part == "..") {
      if (--depth < 0) return false;
    } else if (!part.empty() && part != ".") {
      ++depth;
    }
    pos = end + 1;
  }
  return true;
}

// Removes what lies in `dirfd` (the directory `rel` of the root) and was not written by the
// current layer: the effect of an opaque-directory marker.
Status clear_lower(int dirfd, const std::string& rel, const std::unordered_set<std::string>& layer_paths) {
  UniqueFd dup(fcntl(dirfd, F_DUPFD_CLOEXEC, 0));
  if (!dup) return errno_error("image: dup directory fd");
  DIR* dir = fdopendir(dup.get());
  if (dir == nullptr) return errno_error("image: read directory");
  dup.release();
  std::vector<std::string> names;
  while (dirent* e = readdir(dir)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  closedir(dir);
  for (const std::string& name : names) {
    std::string child = rel.empty() ? name : rel + "/" + name;
    if (!layer_paths.count(child)) {
      SP_TRY(remove_tree_at(dirfd, name.c_str()));
      continue;
    }
    UniqueFd sub(openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (sub) SP_TRY(clear_lower(sub.get(), child, layer_paths));
  }
  return {};
}

// Makes room for a new entry `name`: removes a non-directory, or (unless the new entry is a
// directory too) a directory tree.
Status clear_slot(int parent, const char* name, bool keep_dir) {
  struct stat st;
  if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? Status{} : errno_error("image: stat existing entry");
  }
  if (S_ISDIR(st.st_mode) && keep_dir) return {};
  return remove_tree_at(parent, name);
}

// The archive's owner of an entry, applied when unpacking as root (see unpack.h).
struct Owner {
  bool apply = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

Status write_file(archive* a, int parent, const char* name, mode_t mode, const Owner& owner,
                  const UnpackLimits& limits, UnpackCounters& counters) {
  UniqueFd fd(openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return errno_error("image: create file");
  uint64_t end = 0;
  for (;;) {
    const void* buf;
    size_t size;
    la_int64_t offset;
    int r = la().read_data_block(a, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) return invalid("image: archive data is corrupt or truncated");
    if (offset < 0) return invalid("image: archive data has a negative offset");
    uint64_t block_end = static_cast<uint64_t>(offset) + size;
    if (block_end > limits.max_file_bytes) return Error{kETooLarge, "image: a file is larger than the per-file limit"};
    counters.total_bytes += size;
    if (counters.total_bytes > limits.max_total_bytes) {
      return Error{kETooLarge, "image: unpacked size is over the total limit"};
    }
    const char* p = static_cast<const char*>(buf);
    while (size > 0) {
      ssize_t n = pwrite(fd.get(), p, size, offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_error("image: write file");
      }
      p += n; size -= static_cast<size_t>(n); offset += n;
    }
    end = std::max(end, block_end);
  }
  // Sparse tails: make the file as long as the archive says.
  if (ftruncate(fd.get(), static_cast<off_t>(end)) != 0) return errno_error("image: size file");
  if (owner.apply && fchown(fd.get(), owner.uid, owner.gid) != 0) return errno_error("image: chown file");
  // Setuid and setgid are dropped; the sticky bit and rwx bits are kept.
  if (fchmod(fd.get(), mode & 01777) != 0) return errno_error("image: chmod file");
  return {};
}

Status extract_entry(archive* a, archive_entry* entry, int root_dirfd, ArchiveKind kind, bool as_root,
                     const UnpackLimits& limits, UnpackCounters& counters,
                     std::unordered_set<std::string>& layer_paths) {
  const char* raw_path = la().entry_pathname(entry);
  if (raw_path == nullptr) return invalid("image: archive entry has no path");
  SP_TRY_ASSIGN(std::vector<std::string> comps, split_relative_path(raw_path));
  mode_t type = la().entry_filetype(entry);
  const char* hardlink = la().entry_hardlink(entry);
  if (comps.empty()) {
    if (type == AE_IFDIR && hardlink == nullptr) return {};  // "./" itself
    return invalid("image: archive entry names the root as a non-directory");
  }
  if (kind == ArchiveKind::Bundle && (hardlink != nullptr || (type != AE_IFREG && type != AE_IFDIR))) {
    return invalid("image: an image tarball may hold only files and directories");
  }
  // Devices, FIFOs and sockets are never created (and cannot escape anyway).
  if (hardlink == nullptr && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) return {};

  const std::string& name = comps.back();
  bool whiteout = kind == ArchiveKind::Layer && name.starts_with(kWhiteoutPrefix);
  std::string hidden = whiteout ? name.substr(kWhiteoutPrefix.size()) : std::string();
  if (whiteout && (hidden.empty() || hidden == "." || hidden == "..")) return invalid("image: malformed whiteout name");
  // A whiteout under a directory that does not exist hides nothing: no directories are made.
  auto parent_r = open_parent(root_dirfd, comps, /*create=*/!whiteout);
  if (!parent_r.ok() && whiteout && parent_r.error().code == ENOENT) return {};
  SP_TRY_ASSIGN(UniqueFd parent, std::move(parent_r));
  std::string rel;
  for (const std::string& c : comps) rel += (rel.empty() ? "" : "/") + c;

  if (whiteout) {
    if (name == kOpaqueMarker) {
      std::string dir_rel = rel.substr(0, rel.size() - std::min(rel.size(), name.size() + 1));
      if (comps.size() == 1) dir_rel.clear();
      // Once per directory and layer: repeated markers would each walk the tree again. The key
      // cannot clash with a path (tar names hold no NUL).
      if (!layer_paths.insert(std::string("\0opaque:", 8) + dir_rel).second) return {};
      return clear_lower(parent.get(), dir_rel, layer_paths);
    }
    return remove_tree_at(parent.get(), hidden.c_str());
  }

  mode_t mode = la().entry_perm(entry);
  Owner owner;
  if (kind == ArchiveKind::Layer) {
    la_int64_t uid = la().entry_uid(entry), gid = la().entry_gid(entry);
    if (uid < 0 || gid < 0 || uid > limits.max_owner_id || gid > limits.max_owner_id) {
      return invalid("image: a layer entry is owned by a uid or gid above 65535 (sandboxes map 0..65535)");
    }
    owner = Owner{as_root, static_cast<uid_t>(uid), static_cast<gid_t>(gid)};
  }
  if (hardlink != nullptr) {
    auto target_comps = split_relative_path(hardlink);
    if (!target_comps.ok() || target_comps->empty()) return invalid("image: hardlink target is outside the root");
    SP_TRY_ASSIGN(UniqueFd target_parent, open_parent(root_dirfd, *target_comps, /*create=*/false));
    const char* target_name = target_comps->back().c_str();
    struct stat st;
    if (fstatat(target_parent.get(), target_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return invalid("image: hardlink target does not exist");
    }
    if (S_ISDIR(st.st_mode)) return invalid("image: hardlink target is a directory");
    SP_TRY(clear_slot(parent.get(), name.c_str(), false));
    if (linkat(target_parent.get(), target_name, parent.get(), name.c_str(), 0) != 0) {
      return errno_error("image: create hardlink");
    }
  } else if (type == AE_IFDIR) {
    SP_TRY(clear_slot(parent.get(), name.c_str(), true));
    // Without root, owner rwx is forced so that later entries can be written and the tree
    // removed; root needs no permission for either, so the image's mode is kept.
    mode_t dir_mode = (mode & 01777) | (as_root ? 0 : 0700);
    if (mkdirat(parent.get(), name.c_str(), 0700) != 0 && errno != EEXIST) {
      return errno_error("image: create directory");
    }
    if (owner.apply && fchownat(parent.get(), name.c_str(), owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_error("image: chown directory");
    }
    if (fchmodat(parent.get(), name.c_str(), dir_mode, 0) != 0) return errno_error("image: chmod directory");
  } else if (type == AE_IFLNK) {
    const char* target = la().entry_symlink(entry);
    if (target == nullptr || *target == '\0') return invalid("image: symlink has no target");
    if (!symlink_stays_inside(comps, target)) return invalid("image: symlink target climbs above the root");
    SP_TRY(clear_slot(parent.get(), name.c_str(), false));
    if (symlinkat(target, parent.get(), name.c_str()) != 0) return errno_error("image: create symlink");
    if (owner.apply && fchownat(parent.get(), name.c_str(), owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      return errno_error("image: chown symlink");
    }
  } else {
    if (la().entry_size_is_set(entry) && static_cast<uint64_t>(la().entry_size(entry)) > limits.max_file_bytes) {
      return Error{kETooLarge, "image: a file is larger than the per-file limit"};
    }
    SP_TRY(clear_slot(parent.get(), name.c_str(), false));
    SP_TRY(write_file(a, parent.get(), name.c_str(), mode, owner, limits, counters));
  }
  layer_paths.insert(std::move(rel));
  return {};
}

}  // namespace

Result<std::vector<std::string>> split_relative_path(std::string_view path) {
  if (!path.empty() && path.front() == '/') return invalid("image: archive path is absolute");
  std::vector<std::string> comps;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(pos, end - pos);
    if (part == "..") return invalid("image: archive path has a '..' component");
    if (!part.empty() && part != ".") comps.emplace_back(part);
    pos = end + 1;
  }
  if (comps.size() > kMaxPathComponents) return invalid("image: archive path is too deep");
  return comps;
}

Result<UniqueFd> open_beneath(int root_dirfd, std::string_view rel_path, int flags) {
  SP_TRY_ASSIGN(std::vector<std::string> comps, split_relative_path(rel_path));
  if (comps.empty()) return invalid("image: empty path");
  SP_TRY_ASSIGN(UniqueFd parent, open_parent(root_dirfd, comps, /*create=*/false));
  int fd = openat(parent.get(), comps.back().c_str(), flags | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Error{kENotFound, "image: file missing from the image"};
    if (errno == ELOOP) return invalid("image: file in the image is a symlink");
    return errno_error("image: open file in the image");
  }
  return UniqueFd(fd);
}

Status remove_tree_at(int dirfd, const char* name) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? Status{} : errno_error("image: stat while removing");
  }
  if (S_ISDIR(st.st_mode)) {
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno_error("image: open directory while removing");
    DIR* dir = fdopendir(fd);
    if (dir == nullptr) {
      close(fd);
      return errno_error("image: read directory while removing");
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(dir)) {
      std::string_view n = e->d_name;
      if (n != "." && n != "..") names.emplace_back(n);
    }
    Status status;
    for (const std::string& child : names) {
      status = remove_tree_at(fd, child.c_str());
      if (!status.ok()) break;
    }
    closedir(dir);
    SP_TRY(status);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) != 0) return errno_error("image: remove directory");
    return {};
  }
  if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) return errno_error("image: remove file");
  return {};
}

namespace {

// Extracts every entry of `tar`; on failure, the stream's own error (a read error, a size
// over the descriptor's) is reported in preference to libarchive's view of it.
Status extract_all(archive* tar, int root_dirfd, ArchiveKind kind, const UnpackLimits& limits,
                   UnpackCounters& counters) {
  bool as_root = kind == ArchiveKind::Layer && geteuid() == 0;
  std::unordered_set<std::string> layer_paths;  // paths written by this archive (for opaque dirs)
  for (;;) {
    archive_entry* entry;
    int r = la().read_next_header(tar, &entry);
    if (r == ARCHIVE_EOF) return {};
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) return invalid("image: archive header is corrupt or truncated");
    if (++counters.entries > limits.max_entries) {
      return Error{kETooLarge, "image: archive has more entries than the limit"};
    }
    SP_TRY(extract_entry(tar, entry, root_dirfd, kind, as_root, limits, counters, layer_paths));
  }
}

// Reads what is left after the tar's end (padding, trailing bytes) so the digests cover it.
Status drain(Stream& s, const UnpackLimits& limits) {
  s.max_tar_bytes = s.tar_bytes + limits.max_trailing_bytes;
  const void* unused;
  for (;;) {
    la_ssize_t n = read_tar(nullptr, &s, &unused);
    if (n < 0) return *s.error;
    if (n == 0) break;
  }
  for (;;) {
    la_ssize_t n = read_stored(nullptr, &s, &unused);
    if (n < 0) return *s.error;
    if (n == 0) return {};
  }
}

}  // namespace

Status unpack_archive(int archive_fd, int root_dirfd, ArchiveKind kind, const UnpackLimits& limits,
                      UnpackCounters& counters, ArchiveDigests* digests) {
  SP_TRY(load_libarchive());
  auto stream = std::make_unique<Stream>();
  Stream& s = *stream;
  s.fd = archive_fd;
  if (digests != nullptr) s.max_stored_bytes = digests->max_stored_bytes;
  ArchiveReader outer, tar;
  if (outer.a == nullptr || tar.a == nullptr) return Error{ENOMEM, "image: archive_read_new"};
  s.outer = outer.a;
  // Only what OCI and docker-save layers use: other filters (lrzip, lzop, grzip...) would make
  // libarchive run external programs on image bytes. The raw format passes the (decompressed)
  // bytes through; the tar reader has no filter of its own.
  la().read_support_filter_gzip(outer.a);
  la().read_support_filter_zstd(outer.a);
  la().read_support_format_raw(outer.a);
  la().read_support_format_tar(tar.a);
  archive_entry* raw_entry;
  bool opened = la().read_open(outer.a, &s, nullptr, read_stored, nullptr) == ARCHIVE_OK &&
                la().read_next_header(outer.a, &raw_entry) == ARCHIVE_OK;
  // Filter 0 is the one next to the format: "none" when nothing is decompressed.
  s.uncompressed = opened && la().filter_code(outer.a, 0) == ARCHIVE_FILTER_NONE;
  opened = opened && la().read_open(tar.a, &s, nullptr, read_tar, nullptr) == ARCHIVE_OK;
  if (!opened) {
    if (s.error) return *s.error;
    return invalid("image: archive cannot be opened (not a tar, or unknown compression)");
  }
  Status st = extract_all(tar.a, root_dirfd, kind, limits, counters);
  if (!st.ok()) return s.error ? *s.error : st;
  SP_TRY(drain(s, limits));
  if (digests != nullptr) {
    digests->stored_sha256 = s.stored_hash.hex_digest();
    digests->stored_bytes = s.stored_bytes;
    digests->tar_sha256 = s.uncompressed ? digests->stored_sha256 : s.tar_hash.hex_digest();
  }
  return {};
}

}  // namespace sp::image
