// Results of a generation job, written as they finish: one JSON Lines record per prompt, appended and
// fsynced, so a restarted job skips what is done and a crash never loses a finished prompt. Per-prompt
// output files are written atomically and must stay inside the output folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace adapt::generate {

namespace fs = std::filesystem;

struct ResultRecord {
  std::string id;
  std::string text;
  std::int64_t prompt_tokens = 0;
  std::int64_t cached_prompt_tokens = 0;  // of those, positions whose KV cache was copied or loaded, not computed
  std::int64_t completion_tokens = 0;
  std::string finish_reason;  // eos | stop | length
  double time_to_first_token_s = 0;
  double tokens_per_s = 0;   // completion tokens / decode time
  std::string output_file;   // relative to the output folder; empty when none
  std::string conversation;  // the conversation the prompt continued; empty when none
};

class ResultsFile {
 public:
  /// Opens (creating folders as needed) `path`. Records already there are read, so done() can skip
  /// them; a last line cut short by a crash is dropped (the file is rewritten atomically without it,
  /// and a warning says so). IoError naming the file and line for a corrupt record elsewhere.
  explicit ResultsFile(const fs::path& path);
  ~ResultsFile();
  ResultsFile(const ResultsFile&) = delete;
  ResultsFile& operator=(const ResultsFile&) = delete;

  bool done(const std::string& id) const { return done_.count(id) != 0; }
  std::size_t n_done() const { return done_.size(); }
  /// Appends one record and fsyncs it. IoError (e.g. disk full) leaves earlier records intact.
  void append(const ResultRecord& r);
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  int fd_ = -1;
  std::set<std::string> done_;
};

/// The records of the results (or part) file `path`, which exists, as (id, line without its newline)
/// in file order. A last line without its newline (a write cut short by a crash) is no record: it is
/// left out with a warning, and with `repair` the file is rewritten atomically without it. IoError
/// naming the file and line for a line that is not a record.
std::vector<std::pair<std::string, std::string>> results_read(const fs::path& path, bool repair);

/// `relative` resolved inside `out_dir`; ConfigError when it is absolute or climbs out with "..".
fs::path output_path_inside(const fs::path& out_dir, const std::string& relative, const std::string& where);

}  // namespace adapt::generate
