#include "train/data_glob.h"

#include <algorithm>
#include <map>
#include <system_error>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

namespace adapt::train {

namespace {

std::vector<std::string_view> split_components(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t end = s.find('/', start);
    if (end == std::string_view::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

/// Matches a class starting at p[i] == '['; sets `end` to the index after ']'. Returns false with
/// end = npos when the class is not closed.
bool class_match(std::string_view p, std::size_t i, char c, std::size_t& end) {
  std::size_t j = i + 1;
  bool negate = false;
  if (j < p.size() && (p[j] == '!' || p[j] == '^')) {
    negate = true;
    ++j;
  }
  bool hit = false;
  bool first = true;
  while (j < p.size() && (p[j] != ']' || first)) {
    first = false;
    unsigned char lo = static_cast<unsigned char>(p[j]);
    if (p[j] == '\\' && j + 1 < p.size()) lo = static_cast<unsigned char>(p[++j]);
    unsigned char hi = lo;
    if (j + 2 < p.size() && p[j + 1] == '-' && p[j + 2] != ']') {
      hi = static_cast<unsigned char>(p[j + 2]);
      j += 2;
    }
    const auto uc = static_cast<unsigned char>(c);
    if (lo <= uc && uc <= hi) hit = true;
    ++j;
  }
  if (j >= p.size()) {
    end = std::string_view::npos;
    return false;
  }
  end = j + 1;
  return hit != negate;
}

bool component_match(std::string_view p, std::string_view s) {
  // Iterative wildcard matching with one backtrack point for the last '*' (linear in practice).
  std::size_t pi = 0, si = 0;
  std::size_t star_p = std::string_view::npos, star_s = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star_p = pi++;
      star_s = si;
      continue;
    }
    if (pi < p.size()) {
      if (p[pi] == '?') {
        ++pi;
        ++si;
        continue;
      }
      if (p[pi] == '[') {
        std::size_t end = 0;
        if (class_match(p, pi, s[si], end)) {
          pi = end;
          ++si;
          continue;
        }
      } else {
        char lit = p[pi];
        std::size_t next = pi + 1;
        if (lit == '\\' && pi + 1 < p.size()) {
          lit = p[pi + 1];
          next = pi + 2;
        }
        if (lit == s[si]) {
          pi = next;
          ++si;
          continue;
        }
      }
    }
    if (star_p == std::string_view::npos) return false;
    pi = star_p + 1;
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

bool match_from(const std::vector<std::string_view>& p, std::size_t pi, const std::vector<std::string_view>& s,
                std::size_t si) {
  if (pi == p.size()) return si == s.size();
  if (p[pi] == "**") {
    for (std::size_t k = si; k <= s.size(); ++k)
      if (match_from(p, pi + 1, s, k)) return true;
    return false;
  }
  return si < s.size() && component_match(p[pi], s[si]) && match_from(p, pi + 1, s, si + 1);
}

bool is_under(const fs::path& path, const fs::path& dir) {
  if (dir.empty()) return false;
  auto [d, p] = std::mismatch(dir.begin(), dir.end(), path.begin(), path.end());
  return d == dir.end();
}

/// Absolute, lexically normal, without a trailing separator ("corpus/" -> "/abs/corpus").
fs::path absolute_normal(const fs::path& p) {
  fs::path out = fs::absolute(p).lexically_normal();
  if (!out.has_filename() && out.has_relative_path()) out = out.parent_path();
  return out;
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view path) {
  return match_from(split_components(pattern), 0, split_components(path), 0);
}

std::string glob_problem(std::string_view pattern) {
  if (pattern.empty()) return "is empty";
  if (pattern.front() == '/') return "is absolute; patterns are relative to each input folder";
  for (std::string_view c : split_components(pattern)) {
    if (c == "..") return "uses '..'; patterns cannot leave the input folder";
    for (std::size_t i = 0; i < c.size(); ++i) {
      if (c[i] == '\\') {
        ++i;
      } else if (c[i] == '[') {
        std::size_t end = 0;
        class_match(c, i, 'x', end);
        if (end == std::string_view::npos) return "has an unclosed '['";
        i = end - 1;
      } else if (c[i] == '*' && i + 1 < c.size() && c[i + 1] == '*' && c.size() != 2) {
        return "uses '**' inside a component; '**' must stand alone between slashes (e.g. \"**/*.py\")";
      }
    }
  }
  return "";
}

std::vector<DataFile> data_files_discover(const std::vector<std::string>& inputs, const std::vector<std::string>& globs,
                                          std::string_view key, const fs::path& exclude_dir) {
  for (std::size_t g = 0; g < globs.size(); ++g) {
    const std::string problem = glob_problem(globs[g]);
    ADAPT_REQUIRE(problem.empty(), ConfigError, "data.globs[{}] = \"{}\" {}", g, globs[g], problem);
  }
  const fs::path exclude = exclude_dir.empty() ? fs::path{} : absolute_normal(exclude_dir);
  std::vector<DataFile> files;
  // The file (symbolic links resolved) -> the path and "key[i]" that reached it first.
  std::map<fs::path, std::pair<fs::path, std::string>> seen;
  std::vector<std::string> aliases;  // files reached again through a symbolic link: read once
  std::int64_t n_linked_dirs = 0;    // symbolic links to folders: not followed
  auto add = [&](fs::path path, std::string name, const std::string& where, bool listed) {
    std::error_code ec;
    fs::path real = fs::canonical(path, ec);
    if (ec) real = path;
    auto [it, inserted] = seen.emplace(real, std::pair{path, where});
    if (!inserted && it->second.first != path) {  // the same file under another name: a link
      aliases.push_back(fmt::format("'{}' (the file '{}')", path.string(), it->second.first.string()));
      return;
    }
    ADAPT_REQUIRE(inserted, IoError,
                  "input file '{}' is reached twice (by {} and by {}); list each file or folder once", path.string(),
                  it->second.second, where);
    files.push_back({std::move(path), std::move(name), listed});
  };
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::string where = fmt::format("{}[{}]", key, i);
    const fs::path path = absolute_normal(inputs[i]);
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    ADAPT_REQUIRE(!ec && fs::exists(st), IoError, "{} = '{}' does not exist (looked for '{}'). Check the path.", where,
                  inputs[i], path.string());
    if (fs::is_regular_file(st)) {
      add(path, inputs[i], where, /*listed=*/true);
      continue;
    }
    ADAPT_REQUIRE(fs::is_directory(st), IoError, "{} = '{}' is neither a regular file nor a folder", where, inputs[i]);
    ADAPT_REQUIRE(!globs.empty(), ConfigError,
                  "{} = '{}' is a folder but data.globs is empty; say which files to take, e.g. data.globs = "
                  "[\"**/*.py\", \"**/*.cpp\"]",
                  where, inputs[i]);
    std::vector<std::pair<std::string, fs::path>> found;  // (relative path, absolute path)
    std::int64_t n_seen = 0;
    fs::recursive_directory_iterator it(path, fs::directory_options::none, ec), end;
    ADAPT_REQUIRE(!ec, IoError, "cannot list {} = '{}': {}", where, inputs[i], ec.message());
    for (; it != end; it.increment(ec)) {
      ADAPT_REQUIRE(!ec, IoError, "cannot list {} = '{}': {}", where, inputs[i], ec.message());
      const fs::path& p = it->path();
      const bool hidden = p.filename().string().starts_with(".");
      if (hidden || (!exclude.empty() && is_under(p.lexically_normal(), exclude))) {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file(ec)) {
        if (it->is_symlink(ec) && it->is_directory(ec)) ++n_linked_dirs;
        continue;
      }
      ++n_seen;
      const std::string rel = p.lexically_relative(path).generic_string();
      for (const std::string& g : globs) {
        if (glob_match(g, rel)) {
          found.emplace_back(rel, p.lexically_normal());
          break;
        }
      }
    }
    ADAPT_REQUIRE(!found.empty(), IoError,
                  "{} = '{}': no file matches data.globs = [\"{}\"] ({} files seen). Patterns match the path "
                  "relative to the folder; use \"**/*.ext\" to match at any depth.",
                  where, inputs[i], join(globs, "\", \""), n_seen);
    std::sort(found.begin(), found.end());
    for (auto& [rel, abs] : found) add(abs, (fs::path(inputs[i]) / rel).generic_string(), where, /*listed=*/false);
  }
  if (!aliases.empty())
    log::info0("{}: {} file(s) reached again through symbolic links are read once: {}{}", key, aliases.size(),
               join(std::vector(aliases.begin(), aliases.begin() + std::min<std::size_t>(aliases.size(), 3)), ", "),
               aliases.size() > 3 ? ", ..." : "");
  if (n_linked_dirs > 0)
    log::info0("{}: {} symbolic link(s) to folders are not followed; list such a folder in {} to read it", key,
               n_linked_dirs, key);
  return files;
}

}  // namespace adapt::train
