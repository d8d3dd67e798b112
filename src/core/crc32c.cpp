// CRC-32C: slicing-by-8 tables, and on x86-64 the SSE4.2 crc32 instruction chosen at run time (the
// build targets the baseline ISA; the function carries its own target attribute). The hardware path
// runs three independent streams over thirds of each 24 KiB block (the instruction's 3-cycle latency
// otherwise idles the unit) and joins them with the shift operators below.
#include "core/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace adapt {

namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed

using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][i] = c;
  }
  for (std::uint32_t i = 0; i < 256; ++i)
    for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  return t;
}

constexpr Tables kTables = make_tables();

std::uint32_t portable_raw(const unsigned char* p, std::size_t n, std::uint32_t c) {
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);  // little-endian host
    w ^= c;
    c = kTables[7][w & 0xFF] ^ kTables[6][(w >> 8) & 0xFF] ^ kTables[5][(w >> 16) & 0xFF] ^
        kTables[4][(w >> 24) & 0xFF] ^ kTables[3][(w >> 32) & 0xFF] ^ kTables[2][(w >> 40) & 0xFF] ^
        kTables[1][(w >> 48) & 0xFF] ^ kTables[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xFF];
  return c;
}

#if defined(__x86_64__)

// Multiplication of polynomials over GF(2) modulo the CRC polynomial, in the reflected bit order,
// and x^(8·n) mod P: together they move a stream's CRC past n zero bytes, so three streams over
// consecutive ranges combine into the CRC of the whole.
std::uint32_t gf2_multiply(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (int i = 0; i < 32; ++i) {
    if (a & 0x80000000u) product ^= b;
    a <<= 1;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return product;
}

std::uint32_t x_pow_8n(std::size_t n) {  // x^(8n) mod P, reflected
  std::uint32_t result = 0x80000000u;    // x^0
  std::uint32_t square = 0x00800000u;    // x^8
  for (; n; n >>= 1) {
    if (n & 1) result = gf2_multiply(result, square);
    square = gf2_multiply(square, square);
  }
  return result;
}

constexpr std::size_t kStreamBytes = 8192;  // each of the three streams per block
const std::uint32_t kShiftStream = x_pow_8n(kStreamBytes);

__attribute__((target("sse4.2"))) std::uint32_t hardware_raw(const unsigned char* p, std::size_t n, std::uint32_t c) {
  std::uint64_t c0 = c;
  while (n >= 3 * kStreamBytes) {
    std::uint64_t c1 = 0, c2 = 0;
    const unsigned char* p1 = p + kStreamBytes;
    const unsigned char* p2 = p + 2 * kStreamBytes;
    for (std::size_t i = 0; i < kStreamBytes; i += 8) {
      std::uint64_t w0, w1, w2;
      std::memcpy(&w0, p + i, 8);
      std::memcpy(&w1, p1 + i, 8);
      std::memcpy(&w2, p2 + i, 8);
      c0 = _mm_crc32_u64(c0, w0);
      c1 = _mm_crc32_u64(c1, w1);
      c2 = _mm_crc32_u64(c2, w2);
    }
    // crc(A B) = shift(crc(A), |B|) ^ crc0(B), with crc0 started from 0 (raw, uninverted values).
    c0 = gf2_multiply(static_cast<std::uint32_t>(c0), kShiftStream) ^ c1;
    c0 = gf2_multiply(static_cast<std::uint32_t>(c0), kShiftStream) ^ c2;
    p += 3 * kStreamBytes;
    n -= 3 * kStreamBytes;
  }
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    c0 = _mm_crc32_u64(c0, w);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c0);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}

const bool kHardware = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2") != 0;
}();

#endif

}  // namespace

std::uint32_t crc32c_portable(const void* data, std::size_t n_bytes, std::uint32_t crc) {
  return ~portable_raw(static_cast<const unsigned char*>(data), n_bytes, ~crc);
}

std::uint32_t crc32c(const void* data, std::size_t n_bytes, std::uint32_t crc) {
#if defined(__x86_64__)
  if (kHardware) return ~hardware_raw(static_cast<const unsigned char*>(data), n_bytes, ~crc);
#endif
  return crc32c_portable(data, n_bytes, crc);
}

bool crc32c_has_hardware() {
#if defined(__x86_64__)
  return kHardware;
#else
  return false;
#endif
}

}  // namespace adapt
