// The exact Llama 3 pre-tokenizer (SPEC-llama §4.1): the split regex of Meta's tokenizer and HF's
// tokenizer.json, implemented by hand as a scanner over UTF-8 code points (no regex engine).
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace adapt::tokenizer {

/// End (byte offset) of the piece that starts at `pos` (< text.size()); the next piece starts there.
/// Implements kLlama3SplitPattern (tokenizer_json.h), exactly as Meta's `pat_str` and tokenizer.json
/// spell it.
/// Tries the seven alternatives in order, as a backtracking regex engine does (leftmost match, first
/// matching alternative wins, greedy quantifiers):
///   1. ' followed by s, t, re, ve, m, ll or d in any case (ſ U+017F counts as s: Unicode case folding);
///   2. an optional character that is not \r, \n, a letter or a number, then a run of letters;
///   3. one to three numbers;
///   4. an optional space, a run of characters that are not white space, letters or numbers, then any
///      \r and \n right after it;
///   5. white space up to and including the last \r or \n of the white-space run;
///   6. a white-space run minus its last character when a non-space follows ("  x" → " ", " x"), or
///      the whole run at the end of the text;
///   7. a single white-space character.
/// Letters, numbers and white space are Unicode classes (unicode_class.h). Invalid UTF-8 is never an
/// error: each ill-formed maximal subpart is one character of class Other, so the pieces of invalid
/// input are those of its U+FFFD-replaced text, while the piece bytes stay the raw input bytes.
std::size_t llama3_piece_end(std::string_view text, std::size_t pos);

/// All pieces of `text`, in order; they are views into `text` and concatenate back to it exactly.
std::vector<std::string_view> llama3_pretokenize(std::string_view text);

}  // namespace adapt::tokenizer
