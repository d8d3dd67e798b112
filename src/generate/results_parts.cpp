#include "generate/results_parts.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "generate/results.h"

namespace adapt::generate {

namespace fs = std::filesystem;

namespace {

/// The part files beside `results` (results_part_path of any rank and count), in name order.
std::vector<fs::path> list_parts(const fs::path& results) {
  const fs::path dir = results.parent_path().empty() ? fs::path(".") : results.parent_path();
  const std::string prefix = results.stem().string() + ".dp-", ext = results.extension().string();
  std::vector<fs::path> parts;
  if (fs::is_directory(dir)) {
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || name.size() <= prefix.size() + ext.size() || name.rfind(prefix, 0) != 0 ||
          name.compare(name.size() - ext.size(), ext.size(), ext) != 0)
        continue;
      const std::string mid = name.substr(prefix.size(), name.size() - prefix.size() - ext.size());  // "1-of-4"
      const std::size_t of = mid.find("-of-");
      if (of == std::string::npos || of == 0 || mid.find_first_not_of("0123456789-of") != std::string::npos) continue;
      parts.push_back(e.path());
    }
  }
  std::sort(parts.begin(), parts.end());
  return parts;
}

}  // namespace

fs::path results_part_path(const fs::path& results, std::int64_t rank, std::int64_t count) {
  return results.parent_path() / (results.stem().string() + ".dp-" + std::to_string(rank) + "-of-" +
                                  std::to_string(count) + results.extension().string());
}

std::int64_t results_parts_merge(const fs::path& results) {
  const std::vector<fs::path> parts = list_parts(results);
  if (parts.empty()) return 0;
  std::set<std::string> done;
  if (fs::exists(results))  // a cut last record is dropped from the file, as ResultsFile does
    for (const auto& [id, line] : results_read(results, /*repair=*/true)) done.insert(id);
  std::string add;
  std::int64_t n = 0;
  for (const fs::path& part : parts) {
    for (auto& [id, line] : results_read(part, /*repair=*/false)) {
      if (!done.insert(id).second) continue;
      add += line + "\n";
      ++n;
    }
  }
  if (!add.empty()) {
    const int fd = ::open(results.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ADAPT_REQUIRE(fd >= 0, IoError, "cannot open results file '{}' for appending: {}", results.string(),
                  std::strerror(errno));
    try {
      fd_write_all(fd, add.data(), add.size(), results);
      ADAPT_REQUIRE(::fsync(fd) == 0, IoError, "cannot fsync '{}': {}", results.string(), std::strerror(errno));
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }
  for (const fs::path& part : parts) fs::remove(part);
  return n;
}

std::set<std::string> results_done_ids(const fs::path& results) {
  std::set<std::string> done;
  if (fs::exists(results))
    for (const auto& [id, line] : results_read(results, /*repair=*/false)) done.insert(id);
  for (const fs::path& part : list_parts(results))
    for (const auto& [id, line] : results_read(part, /*repair=*/false)) done.insert(id);
  return done;
}

}  // namespace adapt::generate
