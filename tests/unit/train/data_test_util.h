// Helpers of the data-pipeline tests: a small byte-level BPE tokenizer trained once per process on
// inputs/corpus (with the Llama 3.1 special tokens, so chat works), file writers and stderr capture.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "train/data_config.h"

namespace adapt::test {

/// Trained on first use (about 300 merges of inputs/corpus), written to a temporary folder and loaded.
const tokenizer::Tokenizer& data_tokenizer();

/// Writes `bytes` to `path`, creating its folders.
void write_file(const std::filesystem::path& path, const std::string& bytes);

/// JSON Lines text from records given as JSON texts, one per line.
std::string jsonl(const std::vector<std::string>& records);

/// A JSON string literal of `s` (quotes and escapes included).
std::string json_quote(const std::string& s);

/// A DataConfig over `inputs` with its cache in `dir`/cache, one tokenizer thread, seed 7.
train::DataConfig data_config(const std::filesystem::path& dir, std::vector<std::string> inputs);

/// Everything written to stderr (the log) while it lives.
class StderrCapture {
 public:
  StderrCapture();
  ~StderrCapture();
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  /// Stops capturing (idempotent) and returns what was written.
  std::string text();

 private:
  std::filesystem::path file_;
  int saved_fd_ = -1;
  std::string text_;
};

}  // namespace adapt::test
