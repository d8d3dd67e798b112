// Helpers for the io suites: SHA-256 of byte ranges, and builders for hand-made safetensors bytes
// (valid or deliberately broken) written into a test's temporary folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace adapt::test {

/// Lower-case hex SHA-256 (FIPS 180-4) of `n` bytes.
std::string sha256_hex(const void* data, std::size_t n);
inline std::string sha256_hex(std::string_view s) { return sha256_hex(s.data(), s.size()); }

/// The 8-byte little-endian length field.
std::string le64(std::uint64_t n);

/// A safetensors file image: le64(header.size()) + header + data.
inline std::string st_bytes(std::string_view header, std::string_view data = {}) {
  return le64(header.size()) + std::string(header) + std::string(data);
}

/// Reads a whole file as bytes.
std::string read_all(const std::filesystem::path& path);

}  // namespace adapt::test
