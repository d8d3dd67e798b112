// A checkpoint folder: step_<N>.h5 files, a `latest` pointer naming one of them, and possibly .tmp
// files of interrupted saves (never read). checkpoint_latest trusts `latest` only after verifying the
// file it names, and otherwise walks back to the newest earlier file that verifies.
#include <algorithm>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_schema.h"
#include "checkpoint/hdf5_call.h"
#include "core/file.h"
#include "core/log.h"
#include "core/strings.h"

namespace adapt::checkpoint {

using namespace detail;

std::vector<CheckpointFile> checkpoint_list(const fs::path& dir) {
  std::vector<CheckpointFile> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::optional<std::int64_t> step = parse_checkpoint_file_name(entry.path().filename().string());
    if (step && entry.is_regular_file(ec)) files.push_back({*step, entry.path()});
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return files;
}

bool checkpoint_exists(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  return fs::exists(dir / kLatestFile, ec) || !checkpoint_list(dir).empty();
}

namespace {

/// checkpoint_verify, plus: the step in /meta matches the file name.
void verify_in_folder(const CheckpointFile& f) {
  const std::int64_t step = checkpoint_verify(f.path);
  ADAPT_REQUIRE(step == f.step, CheckpointError,
                "checkpoint '{}' records step {} in /meta but its name says step {}; it was renamed or copied over",
                f.path.string(), step, f.step);
}

std::string trim(std::string s) {
  const auto space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  while (!s.empty() && space(s.back())) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && space(s[i])) ++i;
  return s.substr(i);
}

std::size_t count_tmp_files(const fs::path& dir) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().filename().string().ends_with(".h5.tmp")) ++n;
  return n;
}

}  // namespace

fs::path checkpoint_latest(const fs::path& dir) {
  H5Session session;
  std::error_code ec;
  ADAPT_REQUIRE(fs::is_directory(dir, ec), IoError,
                "checkpoint folder '{}' does not exist (or is not a folder), so there is nothing to resume from. "
                "Check the checkpoint folder in the config, or start the run without resuming.",
                dir.string());

  const std::vector<CheckpointFile> files = checkpoint_list(dir);
  std::optional<CheckpointFile> named;  // what `latest` points at
  std::string pointer_problem;
  const fs::path pointer = dir / kLatestFile;
  if (fs::exists(pointer, ec)) {
    const std::string text = trim(file_read_text(pointer));
    if (const auto step = parse_checkpoint_file_name(text)) {
      named = CheckpointFile{*step, dir / text};
    } else {
      pointer_problem =
          fmt::format("'{}' holds '{}', which is not a checkpoint file name", pointer.string(), text.substr(0, 80));
    }
  } else {
    pointer_problem = fmt::format("there is no '{}' pointer", pointer.string());
  }

  // Candidates, best first: the file `latest` names, then earlier files, newest first.
  std::vector<CheckpointFile> candidates;
  if (named) candidates.push_back(*named);
  for (auto it = files.rbegin(); it != files.rend(); ++it)
    if (!named || it->step < named->step) candidates.push_back(*it);

  if (candidates.empty()) {
    const std::size_t n_tmp = count_tmp_files(dir);
    ADAPT_THROW(IoError,
                "no checkpoint in '{}': {} and no step_*.h5 file{}. Start the run without resuming, or point the "
                "checkpoint folder at the run to resume.",
                dir.string(), pointer_problem,
                n_tmp ? fmt::format(" ({} unfinished .tmp file(s) of interrupted saves are ignored)", n_tmp) : "");
  }

  std::vector<std::string> tried;  // why each unusable candidate was refused
  std::string first_problem;
  for (const CheckpointFile& c : candidates) {
    try {
      verify_in_folder(c);
    } catch (const Error& e) {
      std::string why = e.what();                                // names the file
      while (!why.empty() && why.back() == '.') why.pop_back();  // the messages below end the sentence
      if (tried.empty()) first_problem = why;
      tried.push_back(why);
      continue;
    }
    if (!tried.empty()) {
      log::warn("checkpoint: '{}' is unusable, resuming from the earlier checkpoint '{}' (step {}) instead. Why: {}",
                candidates.front().path.string(), c.path.string(), c.step, first_problem);
    } else if (!named) {
      log::warn("checkpoint: {}; resuming from the newest checkpoint file '{}' (step {})", pointer_problem,
                c.path.string(), c.step);
    }
    return c.path;
  }
  ADAPT_THROW(IoError,
              "no usable checkpoint in '{}'{}: {}. Restore the folder from a backup, or start the run afresh in a "
              "new folder.",
              dir.string(), named ? "" : fmt::format(" ({})", pointer_problem), join(tried, "; "));
}

}  // namespace adapt::checkpoint
