// Byte-level approximation of the Llama 3 pre-tokenizer regex (SPEC-llama §4.1), used to cut
// training text into pieces that BPE merges never cross. ASCII classes only: bytes >= 0x80 count as
// letters, so multi-byte characters stay inside letter runs.
#pragma once

#include <string_view>
#include <vector>

namespace adapt::tokenizer {

/// Splits `text` into pieces, trying at each position, in order: an English contraction ('s 't 're
/// 've 'm 'll 'd, any case); an optional non-letter/non-digit/non-newline byte followed by a run of
/// letters; a run of at most 3 digits; an optional space followed by a run of punctuation and any
/// newlines after it; whitespace up to and including its last newline; a whitespace run not followed
/// by non-whitespace (so "  x" gives " " and " x"); any other whitespace run. The pieces are views
/// into `text` and concatenate back to it exactly. This only steers training: encoders must run the
/// real regex.
std::vector<std::string_view> bpe_pretokenize(std::string_view text);

}  // namespace adapt::tokenizer
