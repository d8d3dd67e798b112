// Small string helpers used by error messages and summaries: "did you mean" suggestions, byte and
// count formatting, byte-size parsing ("5GB").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace adapt {

/// Levenshtein distance.
std::size_t edit_distance(std::string_view a, std::string_view b);

/// The candidate closest to `word` when it is plausibly a typo of it (distance <= max(2, |word|/3)).
std::optional<std::string> closest_match(std::string_view word, const std::vector<std::string>& candidates);

/// " (did you mean 'x'?)" or "" — ready to append to a message.
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

/// "1.50 GiB", "312.0 KiB", "17 B".
std::string format_bytes(std::uint64_t n_bytes);

/// 8030261248 -> "8,030,261,248".
std::string format_count(std::int64_t n);

/// `text` as a decimal integer: an optional '-' and digits, nothing else, within int64 ("42", "-1");
/// nullopt for "", "+4", " 4", "4x", "1e3" and values past int64.
std::optional<std::int64_t> parse_int(std::string_view text);

/// "5GB" -> 5e9, "500MB", "2GiB" -> 2*2^30, "1000" -> 1000. nullopt when malformed.
std::optional<std::uint64_t> parse_byte_size(std::string_view text);

std::string join(const std::vector<std::string>& parts, std::string_view sep);

/// The line of `text` that starts at *pos, without its '\n' (the last line may have none), moving *pos
/// past it; false at the end of the text. `for (std::string_view line; next_line(text, &pos, &line);)`.
bool next_line(std::string_view text, std::size_t* pos, std::string_view* line);
/// True when `s` holds only spaces, tabs and carriage returns (a blank line of next_line's).
bool is_blank(std::string_view s);

/// Appends `s` as a JSON string literal the way serde_json and Python's json.dumps(ensure_ascii=False)
/// write it: escapes `"`, `\`, \b \f \n \r \t and other control characters (\u00xx); keeps DEL and
/// non-ASCII UTF-8 as is. safetensors headers byte-identical to the reference's, and HF chat templates'
/// `tojson`, take it.
void json_append_string(std::string& out, std::string_view s);

}  // namespace adapt
