// Finding the input files of a dataset: pathlib-style glob matching and a deterministic walk of the
// input folders (files sorted by their path relative to the folder, byte-wise).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace adapt::train {

namespace fs = std::filesystem;

/// True when `path` ('/'-separated, relative) matches `pattern`. Components are matched one by one:
/// "**" as a whole component matches any number of components (also none); inside a component "*"
/// matches any run of characters, "?" one character, "[abc]" / "[a-z]" / "[!a-z]" a class, and "\x"
/// the character x. Matching is case-sensitive and byte-wise.
bool glob_match(std::string_view pattern, std::string_view path);

/// Empty when `pattern` is usable, else why not ("unclosed '['", "is absolute", "uses '..'").
std::string glob_problem(std::string_view pattern);

/// One input file of a dataset.
struct DataFile {
  fs::path path;       // absolute, lexically normal
  std::string name;    // how messages show it: the input as written, joined with the relative path
  bool listed = true;  // named in the inputs list itself (false: found in a folder by the globs)
};

/// The files that `inputs` (entries of the config list named `key`, e.g. "data.inputs") denote: a
/// regular file is taken as it is; a folder is walked recursively (symlinks to folders are not
/// followed; names starting with '.' and everything under `exclude_dir` are skipped) and the files
/// matching any of `globs` are taken, sorted by relative path. IoError naming `key[i]` when an input
/// does not exist, a folder has no matching file, or a file is reached twice; ConfigError when a
/// folder is given without globs.
std::vector<DataFile> data_files_discover(const std::vector<std::string>& inputs, const std::vector<std::string>& globs,
                                          std::string_view key, const fs::path& exclude_dir = {});

}  // namespace adapt::train
