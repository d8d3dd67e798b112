#include "core/file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/log.h"

namespace adapt {

MappedFile::MappedFile(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ADAPT_REQUIRE(fd >= 0, IoError, "cannot open '{}': {}. Check the path and its permissions.", path.string(),
                std::strerror(errno));
  try {
    *this = MappedFile(fd, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

MappedFile::MappedFile(int fd, const fs::path& path) : path_(path) {
  struct stat st {};
  ADAPT_REQUIRE(::fstat(fd, &st) == 0, IoError, "cannot stat '{}': {}", path.string(), std::strerror(errno));
  ADAPT_REQUIRE(S_ISREG(st.st_mode), IoError, "'{}' is not a regular file", path.string());
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ADAPT_REQUIRE(p != MAP_FAILED, IoError, "cannot mmap '{}' ({} bytes): {}", path.string(), size,
                  std::strerror(errno));
    data_ = static_cast<const std::uint8_t*>(p);
  }
  size_bytes_ = size;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_bytes_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_bytes_);
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

std::string file_read_text(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ADAPT_REQUIRE(fd >= 0, IoError, "cannot open '{}': {}. Check the path and its permissions.", path.string(),
                std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      ADAPT_THROW(IoError, "cannot read '{}': {}", path.string(), std::strerror(e));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

void fd_read_at(int fd, std::uint64_t offset, void* dst, std::size_t n_bytes, const fs::path& path) {
  auto* p = static_cast<char*>(dst);
  std::size_t done = 0;
  while (done < n_bytes) {
    ssize_t n = ::pread(fd, p + done, n_bytes - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    ADAPT_REQUIRE(n > 0, IoError, "cannot read {} bytes at offset {} of '{}': {}", n_bytes, offset, path.string(),
                  n < 0 ? std::strerror(errno) : "unexpected end of file (truncated?)");
    done += static_cast<std::size_t>(n);
  }
}

void file_read_at(const fs::path& path, std::uint64_t offset, void* dst, std::size_t n_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ADAPT_REQUIRE(fd >= 0, IoError, "cannot open '{}': {}", path.string(), std::strerror(errno));
  try {
    fd_read_at(fd, offset, dst, n_bytes, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

namespace {
// write(2) until done: "" or why it stopped (errno's text).
std::string write_all(int fd, const void* data, std::size_t n_bytes) {
  const auto* p = static_cast<const char*>(data);
  while (n_bytes > 0) {
    ssize_t n = ::write(fd, p, n_bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? std::strerror(errno) : "write returned 0";
    p += n;
    n_bytes -= static_cast<std::size_t>(n);
  }
  return {};
}
}  // namespace

void fd_write_all(int fd, const void* data, std::size_t n_bytes, const fs::path& path) {
  const std::string failed = write_all(fd, data, n_bytes);
  ADAPT_REQUIRE(failed.empty(), IoError, "cannot write '{}': {}. Free some space or choose another output folder.",
                path.string(), failed);
}

void dir_fsync(const fs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some file systems do not allow opening folders
  ::fsync(fd);
  ::close(fd);
}

namespace {

/// This node's name ("" where gethostname fails): with the pid, who wrote a file on a shared folder.
std::string host_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "";
  return host;
}

}  // namespace

FileLock::FileLock(const fs::path& path, std::string_view what) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ADAPT_REQUIRE(fd_ >= 0, IoError, "cannot create the lock file '{}': {}", path.string(), std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) {  // ENOLCK, EOPNOTSUPP: the file system has no flock
      log::warn("{}: cannot lock '{}' ({}): nothing keeps a second job from using it at the same time", what,
                path.string(), std::strerror(err));
      ::close(fd_);
      fd_ = -1;
      return;
    }
    ::close(fd_);
    fd_ = -1;
    std::string holder = file_read_text(path);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ADAPT_THROW(IoError, "{} is in use by another job ({}): wait for it to end, or choose another folder", what,
                holder.empty() ? "it holds " + path.string() : holder);
  }
  const char* job = std::getenv("SLURM_JOB_ID");
  const std::time_t now = std::time(nullptr);
  char when[32] = {};
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  const std::string holder = fmt::format("host {}, pid {}{}, since {}\n", host_name(), ::getpid(),
                                         job ? fmt::format(", Slurm job {}", job) : std::string(), when);
  // Best effort: the lock holds whether or not its note is written (a full disk, say).
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, holder.data(), holder.size(), 0) < 0)
    log::debug("{}: could not note the holder in '{}': {}", what, path.string(), std::strerror(errno));
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

void dir_require_writable(const fs::path& dir, std::string_view what) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  ADAPT_REQUIRE(!ec, IoError, "{} '{}': cannot create it: {}. Choose a folder you can write to.", what, dir.string(),
                ec.message());
  const fs::path probe = dir / (".adapt-write-test." + std::to_string(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ADAPT_REQUIRE(fd >= 0, IoError, "{} '{}' is not writable: {}. Choose a folder you can write to.", what, dir.string(),
                std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

void file_write_atomic(const fs::path& path, const std::function<void(int fd)>& write) {
  // The host in the name too: processes of two nodes sharing a folder may have the same pid.
  const std::string host = host_name();
  const fs::path tmp =
      fs::path(path.string() + ".tmp." + std::to_string(::getpid()) + (host.empty() ? "" : ".") + host);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ADAPT_REQUIRE(fd >= 0, IoError, "cannot create '{}': {}. Check that the folder exists and is writable.", tmp.string(),
                std::strerror(errno));
  try {
    write(fd);
    ADAPT_REQUIRE(::fsync(fd) == 0, IoError, "cannot fsync '{}': {}", tmp.string(), std::strerror(errno));
    ADAPT_REQUIRE(::close(fd) == 0, IoError, "cannot close '{}': {}", tmp.string(), std::strerror(errno));
    fd = -1;
    ADAPT_REQUIRE(::rename(tmp.c_str(), path.c_str()) == 0, IoError, "cannot rename '{}' to '{}': {}", tmp.string(),
                  path.string(), std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  dir_fsync(path.parent_path());
}

void file_write_atomic(const fs::path& path, std::string_view contents) {
  file_write_atomic(path, [&](int fd) { fd_write_all(fd, contents.data(), contents.size(), path); });
}

ScratchFile::ScratchFile(const fs::path& dir, std::string what, bool o_tmpfile) : dir_(dir), what_(std::move(what)) {
  if (o_tmpfile) fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd_ < 0) {  // a file system without O_TMPFILE (some network ones): a name, removed at once
    static std::atomic<int> n_made{0};
    const fs::path name = dir / fmt::format(".scratch.{}.{}.{}", ::getpid(), host_name(), n_made++);
    fd_ = ::open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ >= 0) ::unlink(name.c_str());
  }
  ADAPT_REQUIRE(fd_ >= 0, IoError,
                "cannot make a scratch file in '{}' for {}: {}. Check that the folder exists and "
                "is writable.",
                dir.string(), what_, std::strerror(errno));
}

ScratchFile::~ScratchFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ScratchFile::append(const void* data, std::size_t n_bytes) {
  const std::string failed = write_all(fd_, data, n_bytes);
  ADAPT_REQUIRE(failed.empty(), IoError, "cannot write {} to a scratch file in '{}': {}. Free space there.", what_,
                dir_.string(), failed);
  size_ += n_bytes;
}

void ScratchFile::copy_to(int fd, const fs::path& fd_path) const {
  std::vector<char> buf(static_cast<std::size_t>(std::min<std::uint64_t>(size_, std::uint64_t{16} << 20)));
  for (std::uint64_t at = 0; at < size_; at += buf.size()) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size_ - at));
    fd_read_at(fd_, at, buf.data(), n, dir_ / ("(scratch file: " + what_ + ")"));
    fd_write_all(fd, buf.data(), n, fd_path);
  }
}

}  // namespace adapt
