// Helpers for the tokenizer golden tests: the fixture files written by scripts/make_tokenizer_fixtures.py
// (tests/golden/data/tokenizer), where Meta's tokenizer.model is, and readable mismatch reports.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace adapt::test {

/// shared_dir()/models/llama3/tokenizer.model (may not exist).
fs::path meta_tokenizer_path();

/// tests/golden/data/tokenizer/<name>.
fs::path tokenizer_fixture(const std::string& name);

/// One JSON value per non-empty line of a .jsonl file; IoError naming file and line when one does not parse.
std::vector<nlohmann::json> read_jsonl(const fs::path& path);

/// A JSON array of ints as token ids.
std::vector<tokenizer::TokenId> ids_of(const nlohmann::json& array);

/// `text` with control and non-ASCII bytes escaped (\n, \x1f, \u00e9 as raw bytes \xc3\xa9), clipped.
std::string escaped(std::string_view text, std::size_t max_bytes = 160);

/// "[1, 2, 3]" (clipped).
std::string ids_text(const std::vector<tokenizer::TokenId>& ids, std::size_t max_ids = 40);

/// "" when equal, else where `got` first differs from `expected`, with a few ids of context.
std::string ids_diff(const std::vector<tokenizer::TokenId>& expected, const std::vector<tokenizer::TokenId>& got);

/// Writes Meta's rank file as an HF Llama 3 tokenizer.json (what transformers' TikTokenConverter writes:
/// byte-level vocab, merges = every split of every token into two tokens, ordered by the token's rank,
/// then the ranks of the two halves; ignore_merges; the 256 specials as added tokens; BOS post-processor),
/// merges in the legacy "A B" form or the [["A", "B"]] form. Test-only: such a file derived from Meta's
/// tokenizer must never be committed.
void write_llama3_tokenizer_json(const fs::path& rank_file, const fs::path& out, bool pair_merges);

}  // namespace adapt::test
