// Checked file I/O: read-only memory maps, whole-file reads, and atomic writes (write to a temporary
// name in the same folder, fsync, rename, fsync the folder) so an interrupted or failed write never
// leaves a half-written file under the final name. Every failure is an IoError naming the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace adapt {

namespace fs = std::filesystem;

/// A read-only, private memory map of a whole file. Pages are touched only when read, so a reader
/// that uses a byte range of a large file costs only that range.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const fs::path& path);
  /// Maps the regular file open as `fd` (which stays open; the caller closes it): what a reader that
  /// has already opened and checked the file maps is that inode, even when `path` is renamed over
  /// meanwhile. `path` names the file in messages. IoError when it is not a regular file or cannot be
  /// mapped.
  MappedFile(int fd, const fs::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const std::uint8_t* data() const { return data_; }
  std::size_t size_bytes() const { return size_bytes_; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_bytes_ = 0;
};

/// Reads a whole file; IoError naming the path when it is missing or unreadable.
std::string file_read_text(const fs::path& path);

/// Reads `n_bytes` at `offset` with pread; IoError when the file is shorter.
void file_read_at(const fs::path& path, std::uint64_t offset, void* dst, std::size_t n_bytes);

/// An exclusive lock on `path` (flock), held until destroyed; the kernel releases it when the process
/// ends, so a killed job leaves no stale lock. The file records its holder (host, pid, Slurm job, time)
/// for the message another process gets. On a file system without flock (some NFS mounts) a warning
/// says that the folder is not protected, and nothing is locked; where flock works within one node only
/// (BeeGFS by default, NFS with local_lock=flock, Lustre with localflock) jobs on two nodes both get
/// the lock, and no warning says so.
class FileLock {
 public:
  /// Takes the lock, or throws IoError naming `what` (e.g. "run.dir '...'"), its holder and what to do.
  FileLock(const fs::path& path, std::string_view what);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

/// Creates `dir` if needed and checks that a file can be created in it; IoError naming `what` (the
/// setting, e.g. "run.dir") otherwise. For jobs that should fail before minutes of loading, not after.
void dir_require_writable(const fs::path& dir, std::string_view what);

/// Writes a file atomically: `write(fd)` fills `<path>.tmp.<pid>.<host>`, which is fsynced and renamed over
/// `path`, then the folder is fsynced. On any failure (including a full disk) the temporary file is
/// removed, the previous `path` is untouched, and IoError is thrown.
void file_write_atomic(const fs::path& path, const std::function<void(int fd)>& write);
void file_write_atomic(const fs::path& path, std::string_view contents);

/// pread(2) of n_bytes at `offset` of the open file `fd` until done; IoError naming `path` (the file
/// ends early, or the read fails) otherwise.
void fd_read_at(int fd, std::uint64_t offset, void* dst, std::size_t n_bytes, const fs::path& path);

/// write(2) until done; IoError naming `path` (e.g. "No space left on device") otherwise.
void fd_write_all(int fd, const void* data, std::size_t n_bytes, const fs::path& path);

/// fsync of a folder, so a rename inside it is durable.
void dir_fsync(const fs::path& dir);

/// An unnamed file in `dir` (O_TMPFILE, else a name removed at once): scratch space on that file system
/// instead of in memory, gone however the process ends (on NFS an open removed file stays as a `.nfs*`
/// file until it is closed, and after a node crash until removed by hand). `what` names it in errors
/// (e.g. "the token cache's tokens"). IoError when it cannot be made or written (a full disk), naming
/// `what` and `dir`. `o_tmpfile` false takes the fallback at once (a named file removed at once, what a
/// file system without O_TMPFILE gets).
class ScratchFile {
 public:
  ScratchFile(const fs::path& dir, std::string what, bool o_tmpfile = true);
  ~ScratchFile();
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  /// Appends n_bytes at the end.
  void append(const void* data, std::size_t n_bytes);
  std::uint64_t size_bytes() const { return size_; }
  /// Writes its bytes, in order, to `fd` (fd_write_all naming `fd_path`).
  void copy_to(int fd, const fs::path& fd_path) const;

 private:
  int fd_ = -1;
  fs::path dir_;
  std::string what_;
  std::uint64_t size_ = 0;
};

}  // namespace adapt
