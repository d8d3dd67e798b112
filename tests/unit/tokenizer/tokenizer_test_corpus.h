// inputs/corpus as training texts for the tokenizer tests and make_tokenizer_json: every regular file
// except README.md, in path order, so training on it is deterministic.
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"

namespace adapt::tokenizer_test {

/// Contents of the corpus files under `dir` (recursively), sorted by path. IoError when none.
inline std::vector<std::string> corpus_texts(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> paths;
  ADAPT_REQUIRE(std::filesystem::is_directory(dir), IoError, "corpus folder '{}' not found", dir.string());
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().filename() != "README.md") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  ADAPT_REQUIRE(!paths.empty(), IoError, "corpus folder '{}' holds no files", dir.string());
  std::vector<std::string> texts;
  for (const auto& p : paths) texts.push_back(file_read_text(p));
  return texts;
}

}  // namespace adapt::tokenizer_test
