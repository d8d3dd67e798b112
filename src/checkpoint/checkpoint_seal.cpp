// Seal of a checkpoint file: see checkpoint_seal.h for the layout.
#include "checkpoint/checkpoint_seal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "checkpoint/checkpoint.h"
#include "core/crc32c.h"
#include "core/file.h"
#include "core/strings.h"

namespace adapt::checkpoint::detail {

namespace {

constexpr char kMagic[8] = {'A', 'D', 'A', 'P', 'T', 'C', 'K', 'P'};
constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
constexpr std::uint32_t kSealVersion = 1;
constexpr std::size_t kSealCrcField = 28;  // the seal's own CRC covers every other byte of it
constexpr std::string_view kSealText =
    "adapt checkpoint: HDF5 file from byte 512 (its user block holds this seal); bytes 16-23 are the "
    "file size, 24-27 the CRC-32C of bytes 512 to the end, 28-31 the CRC-32C of bytes 0-27 and 32-511.\n";
static_assert(32 + kSealText.size() <= kSealBytes);

struct Seal {
  std::uint32_t version = 0, seal_bytes = 0, body_crc = 0, seal_crc = 0;
  std::uint64_t file_bytes = 0;
};

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // little-endian host
  return v;
}

template <typename T>
void store(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

std::uint32_t seal_crc(const char* h) {
  return crc32c(h + kSealCrcField + 4, kSealBytes - kSealCrcField - 4, crc32c(h, kSealCrcField));
}

Seal parse(const char* h) {
  Seal s;
  s.version = load<std::uint32_t>(h + 8);
  s.seal_bytes = load<std::uint32_t>(h + 12);
  s.file_bytes = load<std::uint64_t>(h + 16);
  s.body_crc = load<std::uint32_t>(h + 24);
  s.seal_crc = load<std::uint32_t>(h + kSealCrcField);
  return s;
}

/// The seal's own checks (magic, header CRC, version, size fields); not the body.
void check_seal(const fs::path& path, const char* h, std::uint64_t file_bytes) {
  if (std::memcmp(h, kMagic, sizeof kMagic) != 0) {
    ADAPT_REQUIRE(std::memcmp(h, kHdf5Signature, sizeof kHdf5Signature) != 0, CheckpointError,
                  "checkpoint '{}' is a plain HDF5 file without adapt's seal (the 512-byte header with the "
                  "file's length and CRC-32C that adapt writes before the HDF5 data), so it was not written by "
                  "this version of adapt or was rewritten by another program. Use a checkpoint written by "
                  "adapt_train.",
                  path.string());
    ADAPT_THROW(CheckpointError,
                "checkpoint '{}' does not start with adapt's seal 'ADAPTCKP': it is not an adapt checkpoint, or "
                "its first bytes were overwritten. Use an earlier checkpoint.",
                path.string());
  }
  const Seal s = parse(h);
  const std::uint32_t crc = seal_crc(h);
  ADAPT_REQUIRE(crc == s.seal_crc, CheckpointError,
                "checkpoint '{}' is damaged: its seal (bytes 0-511) fails its own CRC-32C ({:08x}, recorded "
                "{:08x}). Use an earlier checkpoint.",
                path.string(), crc, s.seal_crc);
  ADAPT_REQUIRE(s.version == kSealVersion && s.seal_bytes == kSealBytes, CheckpointError,
                "checkpoint '{}' has seal version {} ({} bytes); this build of adapt reads version {} ({} bytes). "
                "Resume with the adapt version that wrote it or a newer one.",
                path.string(), s.version, s.seal_bytes, kSealVersion, kSealBytes);
  ADAPT_REQUIRE(s.file_bytes == file_bytes, CheckpointError,
                "checkpoint '{}' is {} bytes, but its seal records {} ({}): {}. Use an earlier checkpoint.",
                path.string(), file_bytes, s.file_bytes, format_bytes(s.file_bytes),
                file_bytes < s.file_bytes ? "the file was truncated (an interrupted copy or a full disk?)"
                                          : "bytes were appended after it was written");
}

/// An open checkpoint file, closed when it goes out of scope, and its size at opening.
struct OpenFile {
  int fd = -1;
  std::uint64_t size_bytes = 0;
  OpenFile(const fs::path& path, int flags) {
    std::error_code ec;
    ADAPT_REQUIRE(fs::is_regular_file(path, ec), CheckpointError,
                  "checkpoint '{}' does not exist or is not a regular file. Check the path.", path.string());
    fd = ::open(path.c_str(), flags | O_CLOEXEC);
    ADAPT_REQUIRE(fd >= 0, CheckpointError, "cannot open checkpoint '{}': {}", path.string(), std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      ADAPT_THROW(CheckpointError, "cannot stat checkpoint '{}': {}", path.string(), std::strerror(err));
    }
    size_bytes = static_cast<std::uint64_t>(st.st_size);
  }
  ~OpenFile() { ::close(fd); }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
};

/// Reads bytes [offset, offset + n) of the file into dst.
void read_all(int fd, const fs::path& path, char* dst, std::size_t offset, std::size_t n) {
  for (std::size_t done = 0; done < n;) {
    const ssize_t got = ::pread(fd, dst + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    ADAPT_REQUIRE(got > 0, CheckpointError, "cannot read checkpoint '{}' at byte {}: {}", path.string(), offset + done,
                  got < 0 ? std::strerror(errno) : "the file shrank while it was read");
    done += static_cast<std::size_t>(got);
  }
}

}  // namespace

void seal_image(char* image, std::size_t size_bytes) {
  ADAPT_CHECK(size_bytes > kSealBytes, "checkpoint image of {} bytes has no room for its seal", size_bytes);
  std::memset(image, 0, kSealBytes);
  std::memcpy(image, kMagic, sizeof kMagic);
  store<std::uint32_t>(image + 8, kSealVersion);
  store<std::uint32_t>(image + 12, static_cast<std::uint32_t>(kSealBytes));
  store<std::uint64_t>(image + 16, size_bytes);
  store<std::uint32_t>(image + 24, crc32c(image + kSealBytes, size_bytes - kSealBytes));
  std::memcpy(image + 32, kSealText.data(), kSealText.size());
  store<std::uint32_t>(image + kSealCrcField, seal_crc(image));
}

SealedFile read_sealed(const fs::path& path) {
  const OpenFile file(path, O_RDONLY);
  ADAPT_REQUIRE(file.size_bytes > kSealBytes, CheckpointError,
                "checkpoint '{}' is {} bytes, too short for adapt's {}-byte seal and any HDF5 data: the file "
                "was truncated or is not a checkpoint. Use an earlier checkpoint.",
                path.string(), file.size_bytes, kSealBytes);
  SealedFile f;
  f.size_bytes = static_cast<std::size_t>(file.size_bytes);
  f.bytes.reset(new char[f.size_bytes]);
  char* h = f.bytes.get();
  read_all(file.fd, path, h, 0, kSealBytes);
  check_seal(path, h, f.size_bytes);  // a truncated or foreign file stops before the rest is read
  read_all(file.fd, path, h + kSealBytes, kSealBytes, f.size_bytes - kSealBytes);
  const std::uint32_t recorded = parse(h).body_crc;
  const std::uint32_t crc = crc32c(h + kSealBytes, f.size_bytes - kSealBytes);
  ADAPT_REQUIRE(crc == recorded, CheckpointError,
                "checkpoint '{}' is damaged: the CRC-32C of its {} is {:08x}, but its seal records {:08x}, so "
                "bytes changed after it was written (disk or copy error, or an edit). Use an earlier "
                "checkpoint.",
                path.string(), format_bytes(f.size_bytes - kSealBytes), crc, recorded);
  return f;
}

void reseal_file(const fs::path& path) {
  const OpenFile file(path, O_RDWR);
  const std::size_t size = file.size_bytes;
  ADAPT_REQUIRE(size > kSealBytes, CheckpointError, "checkpoint '{}' is too short to hold a seal", path.string());
  std::unique_ptr<char[]> bytes(new char[size]);
  read_all(file.fd, path, bytes.get(), 0, size);
  ADAPT_REQUIRE(std::memcmp(bytes.get(), kMagic, sizeof kMagic) == 0, CheckpointError,
                "checkpoint '{}' has no adapt seal to update", path.string());
  seal_image(bytes.get(), size);
  ADAPT_REQUIRE(
      ::pwrite(file.fd, bytes.get(), kSealBytes, 0) == static_cast<ssize_t>(kSealBytes) && ::fsync(file.fd) == 0,
      CheckpointError, "cannot rewrite the seal of checkpoint '{}': {}", path.string(), std::strerror(errno));
}

}  // namespace adapt::checkpoint::detail
