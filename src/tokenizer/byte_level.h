// GPT-2 byte-level alphabet (SPEC-llama §4.3): every byte stands for one printable code point, so a
// byte-level BPE vocabulary can be stored as JSON strings. Pure functions over immutable tables.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace adapt::tokenizer {

/// The code point that stands for each byte (GPT-2 `bytes_to_unicode`): bytes 0x21–0x7E, 0xA1–0xAC
/// and 0xAE–0xFF map to the code point of the same value; the other 68 bytes (0x00–0x20, 0x7F–0xA0,
/// 0xAD), in increasing byte order, map to U+0100, U+0101, … (space → U+0120 'Ġ', '\n' → U+010A 'Ċ').
/// Thread-safe (a static table built once).
const std::array<char32_t, 256>& bytes_to_unicode();

/// Inverse of bytes_to_unicode(): the byte that `code_point` stands for, or nullopt when the code
/// point is not one of the 256 in the alphabet.
std::optional<std::uint8_t> unicode_to_byte(char32_t code_point);

/// Raw bytes → UTF-8 text in the byte-level alphabet (" Hello" → "ĠHello"). Accepts any bytes,
/// including invalid UTF-8.
std::string byte_level_encode(std::string_view bytes);

/// UTF-8 text in the byte-level alphabet → raw bytes ("ĠHello" → " Hello"); nullopt when `text` is
/// not valid UTF-8 or holds a code point outside the alphabet.
std::optional<std::string> byte_level_decode(std::string_view text);

}  // namespace adapt::tokenizer
