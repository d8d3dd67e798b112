// DataConfig: the [data] section of a training job (inputs, record format, packing, eval split,
// shuffle seed, token cache folder). Header-only plain struct: config/ fills it from train.toml,
// train/ validates it (data_config_check.h) against the model's context and runs it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace adapt::train {

/// How input files are read when data.format is set. Text / PromptCompletion / Chat: every input file
/// is JSON Lines with records of that format only. Raw: every file is one document, its bytes taken
/// as they are (also .jsonl files). Unset (the default): a file ending in .jsonl holds JSON Lines
/// records whose format is detected per file from its first record; any other file is one raw document.
enum class DataFormat { Text, PromptCompletion, Chat, Raw };

/// TOML names of DataFormat, for the config schema (enumeration()) and messages.
inline std::vector<std::pair<std::string, DataFormat>> data_format_names() {
  return {{"text", DataFormat::Text},
          {"prompt_completion", DataFormat::PromptCompletion},
          {"chat", DataFormat::Chat},
          {"raw", DataFormat::Raw}};
}

struct DataConfig {
  /// JSON Lines files, source files and folders. Folders are walked recursively and the files
  /// matching `globs` are taken (each one document). A job file's relative paths resolve against its
  /// folder (--set values: the current directory) when it is loaded; in code, against the current one.
  std::vector<std::string> inputs;
  /// Patterns matched against each file's path relative to its input folder, pathlib style: "*"
  /// and "?" stay inside one path component, "**" spans any number of folders (also none), "[a-z]"
  /// classes. "*.py" matches only the folder's top level; "**/*.py" matches at any depth.
  std::vector<std::string> globs;
  std::optional<DataFormat> format;  // unset: detected per file (see DataFormat)

  std::int64_t seq_len = 2048;  // T: tokens per training sequence (each row holds T+1 tokens)
  /// true: documents are concatenated and cut into rows (no padding). false: one document per row,
  /// truncated to T+1 tokens and padded.
  bool pack = true;
  /// Packed rows only. false: attention stays inside each document (segment_ids) and RoPE positions
  /// restart at 0 at each document start. true: a row is one sequence (positions 0..T-1).
  bool cross_document_attention = false;
  /// true: only completion tokens (prompt_completion completions, chat assistant turns) are targets;
  /// text and raw documents are completions throughout. false: every token is a target.
  bool loss_on_completions_only = false;
  bool add_bos = true;  // prepend BOS to text, raw and prompt_completion documents (chat writes its own)
  bool add_eos = true;  // append the first EOS (<|end_of_text|>) to them (chat turns end with <|eot_id|>)

  /// Evaluation documents held out of `inputs`, chosen by a seeded permutation: a fraction of the
  /// documents in (0, 1) (at least one document), or a count >= 1. At most one of the two, and neither
  /// with eval_inputs. Unset (and no eval_inputs): no evaluation data.
  std::optional<double> eval_fraction;
  std::optional<std::int64_t> eval_documents;
  /// A separate evaluation set (read like `inputs`, with the same globs and format); all of it is eval.
  std::vector<std::string> eval_inputs;

  std::int64_t seed = 1234;  // document order, eval split and the per-epoch shuffle
  /// Folder for the tokenized caches (created when missing; shared by all ranks of a job).
  std::filesystem::path cache_dir;
  /// Threads used to tokenize when a cache is built; unset: all hardware threads.
  std::optional<std::int64_t> tokenize_threads;
};

}  // namespace adapt::train
