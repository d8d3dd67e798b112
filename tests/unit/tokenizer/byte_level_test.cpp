// Byte-level alphabet (SPEC-llama §4.3): bijection, the SPEC's example code points, and round trips
// through byte_level_encode / byte_level_decode.
#include <doctest/doctest.h>

#include <set>

#include "tokenizer/byte_level.h"

using namespace adapt::tokenizer;

TEST_CASE("bytes_to_unicode is a bijection onto 256 code points with the SPEC examples") {
  const auto& table = bytes_to_unicode();
  std::set<char32_t> seen(table.begin(), table.end());
  CHECK(seen.size() == 256);
  // Compared as integers: doctest cannot print char32_t.
  auto cp = [&](int b) { return static_cast<std::uint32_t>(table[b]); };
  CHECK(cp(' ') == 0x120);   // Ġ
  CHECK(cp('\n') == 0x10A);  // Ċ
  CHECK(cp('\t') == 0x109);  // ĉ
  CHECK(cp(0x00) == 0x100);  // Ā
  CHECK(cp(0x7F) == 0x121);  // ġ
  CHECK(cp(0xAD) == 0x143);  // Ń
  CHECK(cp('A') == 0x41);
  CHECK(cp(0xE9) == 0xE9);
  for (int b = 0; b < 256; ++b) {
    auto back = unicode_to_byte(table[b]);
    REQUIRE(back.has_value());
    CHECK(*back == b);
  }
  CHECK_FALSE(unicode_to_byte(U' ').has_value());  // space itself is not in the alphabet
  CHECK_FALSE(unicode_to_byte(U'\u0144').has_value());
  CHECK_FALSE(unicode_to_byte(U'\U0001F600').has_value());
}

TEST_CASE("byte_level_encode and byte_level_decode round-trip any bytes") {
  CHECK(byte_level_encode(" Hello") == "\xC4\xA0Hello");   // "ĠHello"
  CHECK(byte_level_encode("\n\n") == "\xC4\x8A\xC4\x8A");  // "ĊĊ"
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  auto decoded = byte_level_decode(byte_level_encode(all));
  REQUIRE(decoded.has_value());
  CHECK(*decoded == all);
  CHECK(byte_level_decode("\xC4\xA0Hello") == std::optional<std::string>(" Hello"));
}

TEST_CASE("byte_level_decode rejects text outside the alphabet and malformed UTF-8") {
  CHECK_FALSE(byte_level_decode("a b").has_value());               // raw space
  CHECK_FALSE(byte_level_decode("\xF0\x9F\x98\x80").has_value());  // emoji
  CHECK_FALSE(byte_level_decode("\xC4").has_value());              // truncated sequence
  CHECK_FALSE(byte_level_decode("\xC0\xA0").has_value());          // overlong encoding
  CHECK_FALSE(byte_level_decode("\x80").has_value());              // lone continuation byte
  CHECK(byte_level_decode("") == std::optional<std::string>(""));
}
