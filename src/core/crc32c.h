// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected, as in iSCSI RFC 3720, ext4 and RocksDB):
// a whole-file checksum for checkpoints. SSE4.2's crc32 instruction when the CPU has it (about
// 1 byte per cycle per stream; three streams interleaved), else an 8-table software loop.
#pragma once

#include <cstddef>
#include <cstdint>

namespace adapt {

/// CRC-32C of `n_bytes` at `data`, continuing from `crc` (the value returned for the bytes before;
/// 0 to start). crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(const void* data, std::size_t n_bytes, std::uint32_t crc = 0);

/// The software loop alone (tests compare both paths).
std::uint32_t crc32c_portable(const void* data, std::size_t n_bytes, std::uint32_t crc = 0);

/// True when crc32c() uses the CPU's crc32 instruction.
bool crc32c_has_hardware();

}  // namespace adapt
