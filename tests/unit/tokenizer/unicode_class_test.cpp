// unicode_class: UTF-8 reading with maximal subparts (Unicode §3.9, the examples of Table 3-8), lossy
// decoding as Python's decode('utf-8', 'replace'), and the generated class tables on known code points.
#include "tokenizer/unicode_class.h"

#include <doctest/doctest.h>

using namespace adapt::tokenizer;

TEST_CASE("utf8_char_at reads well-formed characters and reports maximal subparts of ill-formed ones") {
  auto at = [](std::string_view s, std::size_t pos = 0) { return utf8_char_at(s, pos); };
  CHECK(at("A").cp == U'A');
  CHECK(at("\xc3\xa9").cp == U'é');
  CHECK(at("\xc3\xa9").n_bytes == 2);
  CHECK(at("\xe2\x82\xac").cp == U'€');
  CHECK(at("\xf0\x9f\x9a\x80").cp == U'🚀');
  CHECK(at("\xf0\x9f\x9a\x80").n_bytes == 4);
  // Ill-formed: one U+FFFD per maximal subpart.
  CHECK(at("\x80").cp == kInvalidCodePoint);
  CHECK(at("\x80").n_bytes == 1);
  CHECK(at("\xc0\xaf").n_bytes == 1);          // overlong lead
  CHECK(at("\xe0\x80\x80").n_bytes == 1);      // E0 needs A0..BF next
  CHECK(at("\xed\xa0\x80").n_bytes == 1);      // surrogate
  CHECK(at("\xf4\x90\x80\x80").n_bytes == 1);  // above U+10FFFF
  CHECK(at("\xf5").n_bytes == 1);
  CHECK(at("\xe2\x82").n_bytes == 2);  // truncated: lead + valid continuation
  CHECK(at("\xe2\x82"
           "A")
            .n_bytes == 2);
  CHECK(at("\xf0\x9f\x9a").n_bytes == 3);
  CHECK(at("\xf0\x9f\x9a").cp == kInvalidCodePoint);
}

TEST_CASE("utf8_lossy replaces each maximal subpart by one U+FFFD (Python 'replace', Rust from_utf8_lossy)") {
  CHECK(utf8_lossy("plain ascii") == "plain ascii");
  CHECK(utf8_lossy("caf\xc3\xa9") == "caf\xc3\xa9");
  // Unicode Table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 → a FFFD FFFD FFFD b FFFD c FFFD FFFD d.
  CHECK(utf8_lossy("\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64") ==
        "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
        "b\xef\xbf\xbd"
        "c\xef\xbf\xbd\xef\xbf\xbd"
        "d");
  CHECK(utf8_lossy("\xf0\x9f") == "\xef\xbf\xbd");
}

TEST_CASE("class tables: letters, numbers, White_Space, everything else") {
  CHECK(std::string(unicode_tables_version()) == "16.0.0");
  for (char32_t cp : {U'a', U'Z', U'é', U'ſ', U'Ж', U'λ', U'日', U'한', U'ا', U'ก', U'ª', U'ʰ'})
    CHECK(code_point_class(cp) == CodePointClass::Letter);
  for (char32_t cp : {U'0', U'9', U'٣', U'३', U'²', U'½', U'Ⅻ', U'①', U'𝟙'})
    CHECK(code_point_class(cp) == CodePointClass::Number);
  for (char32_t cp :
       {U'\t', U'\n', U'\v', U'\f', U'\r', U' ', char32_t{0x85}, char32_t{0xA0}, char32_t{0x1680}, char32_t{0x2000},
        char32_t{0x200A}, char32_t{0x2028}, char32_t{0x2029}, char32_t{0x202F}, char32_t{0x205F}, char32_t{0x3000}})
    CHECK(code_point_class(cp) == CodePointClass::Space);
  // Not White_Space although Python's isspace() says so (U+001C..U+001F); ZWSP, BOM, NUL; marks.
  for (char32_t cp : {char32_t{0x1C}, char32_t{0x1F}, char32_t{0x200B}, char32_t{0xFEFF}, char32_t{0}, U'!', U'€', U'😀',
                      char32_t{0x0301}, char32_t{0x200D}, char32_t{0x10FFFF}, kInvalidCodePoint})
    CHECK(code_point_class(cp) == CodePointClass::Other);
  CHECK(code_point_class(0x1C8A) == CodePointClass::Letter);  // new in Unicode 16.0, which the references use
}
