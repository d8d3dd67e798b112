#include "tests/unit/train/data_test_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "tests/support/test_support.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer_json.h"

namespace adapt::test {

const tokenizer::Tokenizer& data_tokenizer() {
  static const tokenizer::Tokenizer tok = [] {
    static TempDir dir("adapt-train-tok");
    const auto texts = tokenizer::bpe_corpus_read(source_dir() / "inputs/corpus");
    const auto merges = tokenizer::bpe_train(texts, {.n_merges = 300});
    tokenizer::tokenizer_json_write(dir.path(), merges);
    return tokenizer::Tokenizer::from_file(dir.path());
  }();
  return tok;
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  write_bytes(path, bytes);
}

std::string jsonl(const std::vector<std::string>& records) {
  std::string out;
  for (const std::string& r : records) out += r + "\n";
  return out;
}

std::string json_quote(const std::string& s) { return nlohmann::json(s).dump(); }

train::DataConfig data_config(const std::filesystem::path& dir, std::vector<std::string> inputs) {
  train::DataConfig c;
  c.inputs = std::move(inputs);
  c.cache_dir = dir / "cache";
  c.tokenize_threads = 1;
  c.seed = 7;
  return c;
}

StderrCapture::StderrCapture() {
  file_ = std::filesystem::temp_directory_path() / ("adapt-stderr-" + std::to_string(::getpid()) + ".txt");
  std::fflush(stderr);
  saved_fd_ = ::dup(2);
  const int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ::dup2(fd, 2);
  ::close(fd);
}

std::string StderrCapture::text() {
  if (saved_fd_ >= 0) {
    std::fflush(stderr);
    ::dup2(saved_fd_, 2);
    ::close(saved_fd_);
    saved_fd_ = -1;
    text_ = file_read_text(file_);
    std::filesystem::remove(file_);
  }
  return text_;
}

StderrCapture::~StderrCapture() { text(); }

}  // namespace adapt::test
