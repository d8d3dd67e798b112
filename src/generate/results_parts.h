// Results of a generation job run by several data-parallel replicas: each replica appends the
// records of its prompts, as they finish, to its own part file beside the results file (no two
// processes ever write one file), and rank 0 merges the parts into the results file at the end, and
// at the start of a rerun (parts left by an interrupted run), so a rerun skips every finished prompt.
#pragma once

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>

namespace adapt::generate {

/// The part file of replica `rank` of `count` beside `results`:
/// "out/results.jsonl" -> "out/results.dp-1-of-4.jsonl".
std::filesystem::path results_part_path(const std::filesystem::path& results, std::int64_t rank, std::int64_t count);

/// Appends to `results` (created if missing) the complete records of every part file beside it
/// (results_part_path of any rank and count, in name order) whose id is not there yet, fsyncs it,
/// then removes the parts. A part's last line cut short by a crash is dropped (that prompt runs
/// again). Returns the records appended. IoError naming the file and line for a corrupt record.
std::int64_t results_parts_merge(const std::filesystem::path& results);

/// The ids of the complete records in `results` and in the part files beside it, read without changing
/// any file (adapt_gen --dry-run: which prompts a run would skip). IoError as for results_parts_merge.
std::set<std::string> results_done_ids(const std::filesystem::path& results);

}  // namespace adapt::generate
