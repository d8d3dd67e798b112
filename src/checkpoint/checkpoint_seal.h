// The seal of a checkpoint file (internal to checkpoint/): a 512-byte header in the HDF5 user block
// (bytes HDF5 reserves for the application and skips; h5py opens the file as usual) that records
// the file's length and a CRC-32C of everything after it. Readers check it before HDF5 parses a
// byte, so a truncated or damaged file is refused with a clear message rather than reaching the
// library's parser (libhdf5 1.10 crashes on some corrupted metadata).
//
// Layout (little-endian):
//   0  char[8]  magic "ADAPTCKP"
//   8  u32      seal version (1)
//  12  u32      seal size in bytes (512; HDF5's superblock starts there)
//  16  u64      file size in bytes, seal included
//  24  u32      CRC-32C of bytes [512, file size)
//  28  u32      CRC-32C of bytes [0, 28) and [32, 512) (the seal but this field)
//  32  text     a line saying what this is, zero-padded to 512
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace adapt::checkpoint::detail {

namespace fs = std::filesystem;

/// Size of the seal, which is the HDF5 user block size the writer sets.
constexpr std::size_t kSealBytes = 512;

/// Writes the seal into image[0, kSealBytes) for the image's `size_bytes` bytes (the HDF5 file
/// starts at kSealBytes).
void seal_image(char* image, std::size_t size_bytes);

/// A checkpoint file read whole into memory and checked against its seal.
struct SealedFile {
  std::unique_ptr<char[]> bytes;
  std::size_t size_bytes = 0;
};

/// Reads `path` and checks its seal (magic, version, length, both CRCs). Throws CheckpointError
/// naming the file and what is wrong (truncated, damaged, not an adapt checkpoint, a newer seal).
SealedFile read_sealed(const fs::path& path);

/// Recomputes the seal of a checkpoint changed in place (e.g. edited with h5py, which keeps the
/// user block). Throws CheckpointError when the file has no seal to update or cannot be rewritten.
void reseal_file(const fs::path& path);

}  // namespace adapt::checkpoint::detail
