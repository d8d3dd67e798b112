#include "generate/results.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "generate/gen_config.h"

namespace adapt::generate {

using json = nlohmann::json;

std::vector<std::pair<std::string, std::string>> results_read(const fs::path& path, bool repair) {
  std::vector<std::pair<std::string, std::string>> out;
  const std::string text = file_read_text(path);
  std::size_t start = 0, line_no = 0;
  while (start < text.size()) {
    const std::size_t nl = text.find('\n', start);
    ++line_no;
    if (nl == std::string::npos) {  // no newline: the write of this record was cut short
      log::warn(
          "{}: dropping an incomplete last record (line {}, {} bytes) left by an interrupted run; that prompt "
          "will run again",
          path.string(), line_no, text.size() - start);
      if (repair) file_write_atomic(path, std::string_view(text).substr(0, start));
      break;
    }
    std::string line = text.substr(start, nl - start);
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    ADAPT_REQUIRE(j.is_object() && j.contains("id") && j["id"].is_string(), IoError,
                  "{}:{}: not a results record (a JSON object with a string \"id\"). Move the file away or fix the "
                  "line; finished prompts are found through it.",
                  path.string(), line_no);
    out.emplace_back(j["id"].get<std::string>(), std::move(line));
    start = nl + 1;
  }
  return out;
}

ResultsFile::ResultsFile(const fs::path& path) : path_(path) {
  if (!path.parent_path().empty()) fs::create_directories(path.parent_path());
  if (fs::exists(path))
    for (const auto& [id, line] : results_read(path, /*repair=*/true)) done_.insert(id);
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  ADAPT_REQUIRE(fd_ >= 0, IoError, "cannot open results file '{}' for appending: {}", path.string(),
                std::strerror(errno));
}

ResultsFile::~ResultsFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ResultsFile::append(const ResultRecord& r) {
  json j;
  j["id"] = r.id;
  j["text"] = r.text;
  j["prompt_tokens"] = r.prompt_tokens;
  j["cached_prompt_tokens"] = r.cached_prompt_tokens;
  j["completion_tokens"] = r.completion_tokens;
  j["finish_reason"] = r.finish_reason;
  j["time_to_first_token_s"] = r.time_to_first_token_s;
  j["tokens_per_s"] = r.tokens_per_s;
  if (!r.output_file.empty()) j["output_file"] = r.output_file;
  if (!r.conversation.empty()) j["conversation"] = r.conversation;
  // Invalid UTF-8 in generated text is replaced rather than failing the record.
  const std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  const off_t before = ::lseek(fd_, 0, SEEK_END);
  try {
    fd_write_all(fd_, line.data(), line.size(), path_);
    ADAPT_REQUIRE(::fsync(fd_) == 0, IoError, "cannot fsync '{}': {}", path_.string(), std::strerror(errno));
  } catch (...) {
    if (before >= 0 && ::ftruncate(fd_, before) != 0) {
      log::warn("{}: could not remove a partial record after a failed write", path_.string());
    }
    throw;
  }
  done_.insert(r.id);
}

fs::path output_path_inside(const fs::path& out_dir, const std::string& relative, const std::string& where) {
  const fs::path rel(relative);
  ADAPT_REQUIRE(!relative.empty() && rel.is_relative(), ConfigError,
                "{}: output = \"{}\" must be a relative path inside the output folder '{}'", where, relative,
                out_dir.string());
  ADAPT_REQUIRE(path_stays_inside(relative), ConfigError,
                "{}: output = \"{}\" leaves the output folder '{}'; use a path below it", where, relative,
                out_dir.string());
  return out_dir / rel.lexically_normal();
}

}  // namespace adapt::generate
