// llama3_pretokenize: pieces worked out by hand from the regex (each alternative and its backtracking),
// and the invalid-UTF-8 policy (an ill-formed sequence cuts like the U+FFFD that replaces it).
#include "tokenizer/llama3_pretokenizer.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tokenizer/unicode_class.h"

using adapt::tokenizer::llama3_pretokenize;
using Pieces = std::vector<std::string>;

namespace {

Pieces split(std::string_view text) {
  Pieces out;
  for (std::string_view p : llama3_pretokenize(text)) out.emplace_back(p);
  return out;
}

}  // namespace

TEST_CASE("contractions: any case, long s, only right after the apostrophe") {
  CHECK(split("they'll") == Pieces{"they", "'ll"});
  CHECK(split("I'M") == Pieces{"I", "'M"});
  CHECK(split("you'Re") == Pieces{"you", "'Re"});
  CHECK(split("it'ſtraße") == Pieces{"it", "'ſ", "traße"});  // ſ folds to s
  CHECK(split("'sup") == Pieces{"'s", "up"});
  CHECK(split("it's") == Pieces{"it", "'s"});
  CHECK(split("it\xe2\x80\x99s") == Pieces{"it", "\xe2\x80\x99s"});  // ’ is not an apostrophe here
  CHECK(split("'x") == Pieces{"'x"});
  CHECK(split(" 's") == Pieces{" '", "s"});  // " ?[^\s\p{L}\p{N}]+" takes the space and the apostrophe
}

TEST_CASE("letters take one leading non-letter, non-digit, non-newline character") {
  CHECK(split("Hello world") == Pieces{"Hello", " world"});
  CHECK(split("(abc)") == Pieces{"(abc", ")"});
  CHECK(split("\tx") == Pieces{"\tx"});
  CHECK(split("\nx") == Pieces{"\n", "x"});
  CHECK(split("1x") == Pieces{"1", "x"});
  CHECK(split("\xe3\x80\x80x") == Pieces{"\xe3\x80\x80x"});  // U+3000 is white space, not a newline
  CHECK(split("na\xc3\xafve caf\xc3\xa9") == Pieces{"na\xc3\xafve", " caf\xc3\xa9"});
}

TEST_CASE("numbers in runs of at most three") {
  CHECK(split("1234567") == Pieces{"123", "456", "7"});
  CHECK(split("x12") == Pieces{"x", "12"});
  CHECK(split("\xd9\xa1\xd9\xa2\xd9\xa3\xd9\xa4") ==
        Pieces{"\xd9\xa1\xd9\xa2\xd9\xa3", "\xd9\xa4"});  // Arabic-Indic digits
  CHECK(split(" 42") == Pieces{" ", "42"});
}

TEST_CASE("punctuation runs take one optional space and the newlines after them") {
  CHECK(split("a, b") == Pieces{"a", ",", " b"});
  CHECK(split("x !!!\n\ny") == Pieces{"x", " !!!\n\n", "y"});
  CHECK(split("};\r\n") == Pieces{"};\r\n"});
  CHECK(split("  ==") == Pieces{" ", " =="});
}

TEST_CASE("white space: up to the last newline, leave one space for the next word, or all of it") {
  CHECK(split("  Hello") == Pieces{" ", " Hello"});
  CHECK(split("a   b") == Pieces{"a", "  ", " b"});
  CHECK(split("a \n b") == Pieces{"a", " \n", " b"});
  CHECK(split("\n\n hello") == Pieces{"\n\n", " hello"});
  CHECK(split("x   ") == Pieces{"x", "   "});
  CHECK(split("x \n\n  \t") == Pieces{"x", " \n\n", "  \t"});
  CHECK(split("x\r\n\r\n  y") == Pieces{"x", "\r\n\r\n", " ", " y"});
  CHECK(split("a \tb") == Pieces{"a", " ", "\tb"});
  CHECK(split(" ") == Pieces{" "});
  CHECK(split("").empty());
}

TEST_CASE("invalid UTF-8 cuts like U+FFFD and keeps the raw bytes") {
  const std::string bad =
      "ab\xff"
      "cd \xe2\x82"
      "1\x80\x80!";
  const std::string replaced = adapt::tokenizer::utf8_lossy(bad);
  const Pieces pieces = split(bad), pieces_replaced = split(replaced);
  REQUIRE(pieces.size() == pieces_replaced.size());
  std::string joined;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    CHECK(adapt::tokenizer::utf8_lossy(pieces[i]) == pieces_replaced[i]);
    joined += pieces[i];
  }
  CHECK(joined == bad);
  CHECK(split("\xff"
              "abc") == Pieces{"\xff"
                               "abc"});  // an Other character followed by letters
}
