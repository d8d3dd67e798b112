// Model folders: index validation as huggingface_hub's loader does it (plus shard/tensor
// consistency), a single-file fallback, and errors that say which file to re-download.
#include "io/sharded.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/strings.h"

namespace adapt::io {

using json = nlohmann::json;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

/// Why a folder without weights has none, from the files it does have.
std::string missing_weights_hint(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  auto first_with = [&](auto pred) -> std::string {
    for (const auto& n : names)
      if (pred(n)) return n;
    return {};
  };
  if (names.empty()) return "The folder is empty: is the download complete?";
  if (auto n = first_with([](const std::string& s) { return s.starts_with("consolidated.") && s.ends_with(".pth"); });
      !n.empty())
    return fmt::format(
        "It holds a Meta checkpoint ('{}'): convert it to the Hugging Face layout first (transformers' "
        "convert_llama_weights_to_hf.py).",
        n);
  if (auto n = first_with([](const std::string& s) { return s.ends_with(".bin") || s.ends_with(".pt"); }); !n.empty())
    return fmt::format("It holds PyTorch pickle weights ('{}'): convert them to safetensors first.", n);
  if (auto n = first_with([](const std::string& s) { return s.ends_with(".safetensors"); }); !n.empty())
    return fmt::format(
        "It holds '{}', which is not a model's weight file name (a PEFT adapter? then pass the base "
        "model's folder here).",
        n);
  if (names.size() > 6) {
    names.resize(6);
    names.back() = "...";
  }
  return fmt::format("It holds: {}. Is this the model folder, and is the download complete?", join(names, ", "));
}

/// Why huggingface_hub would refuse this shard name, or "" when it is acceptable.
std::string bad_shard_name_reason(const std::string& name) {
  if (name.empty()) return "is empty";
  if (fs::path(name).is_absolute() || name.starts_with("/")) return "is an absolute path";
  if (name.find("..") != std::string::npos) return "contains '..'";
  if (fs::path(name).extension() != ".safetensors") return "does not end in .safetensors";
  return {};
}

}  // namespace

ShardedSafetensors::ShardedSafetensors(const fs::path& model_dir) : dir_(model_dir) {
  std::error_code ec;
  ADAPT_REQUIRE(fs::is_directory(model_dir, ec), IoError,
                "model folder '{}' {}. Check the model path (it must be a folder with config.json and the "
                "*.safetensors weights).",
                model_dir.string(), fs::exists(model_dir, ec) ? "is not a folder" : "does not exist");
  if (fs::exists(dir_ / kIndexName, ec)) {
    open_index(dir_ / kIndexName);
    return;
  }
  ADAPT_REQUIRE(fs::exists(dir_ / kSingleName, ec), IoError, "model folder '{}' has neither {} nor {}. {}",
                dir_.string(), kIndexName, kSingleName, missing_weights_hint(dir_));
  files_.push_back(std::make_unique<SafetensorsFile>(dir_ / kSingleName));
  for (const auto& t : files_[0]->tensors()) tensors_.emplace(t.name, Entry{0, &t});
}

void ShardedSafetensors::open_index(const fs::path& index_path) {
  const std::string where = fmt::format("index '{}'", index_path.string());
  constexpr const char* kRedownload = "The index is damaged or incomplete: re-download model.safetensors.index.json.";
  const std::string text = file_read_text(index_path);
  ADAPT_REQUIRE(text.find('\0') == std::string::npos, IoError, "{} is not valid JSON (it contains NUL bytes). {}",
                where, kRedownload);
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    ADAPT_THROW(IoError, "{} is not valid JSON ({}). {}", where, what, kRedownload);
  }
  ADAPT_REQUIRE(doc.is_object(), IoError, "{} must be a JSON object with a 'weight_map', found {}. {}", where,
                doc.type_name(), kRedownload);
  ADAPT_REQUIRE(doc.contains("weight_map") && doc["weight_map"].is_object(), IoError,
                "{} has no 'weight_map' object (tensor name -> shard file name). {}", where, kRedownload);
  const json& weight_map = doc["weight_map"];
  ADAPT_REQUIRE(!weight_map.empty(), IoError, "{} has an empty 'weight_map': it names no tensors. {}", where,
                kRedownload);
  if (doc.contains("metadata")) {
    const json& md = doc["metadata"];
    ADAPT_REQUIRE(md.is_object(), IoError, "{}: 'metadata' must be an object, found {}. {}", where, md.type_name(),
                  kRedownload);
    if (md.contains("total_size")) {
      const json& ts = md["total_size"];
      if (ts.is_number_unsigned()) {
        index_total_size_ = ts.get<std::uint64_t>();
      } else if (ts.is_number_float() && ts.get<double>() >= 0 && std::floor(ts.get<double>()) == ts.get<double>()) {
        index_total_size_ = static_cast<std::uint64_t>(ts.get<double>());  // some older indexes write 1.0e10
      } else {
        ADAPT_THROW(IoError, "{}: metadata.total_size is {}; it must be a non-negative integer. {}", where, ts.dump(),
                    kRedownload);
      }
    }
  }

  // Shard name -> its tensors (sorted by shard name, so files() is in shard order).
  std::map<std::string, std::vector<std::string>> shards;
  for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
    ADAPT_REQUIRE(it.value().is_string(), IoError,
                  "{}: weight_map maps tensor '{}' to {}; it must be a shard file "
                  "name. {}",
                  where, it.key(), it.value().dump(), kRedownload);
    const std::string shard = it.value().get<std::string>();
    const std::string reason = bad_shard_name_reason(shard);
    ADAPT_REQUIRE(reason.empty(), IoError,
                  "{} maps tensor '{}' to shard '{}', which {}. Shard names must be plain file names inside the "
                  "model folder ending in .safetensors (huggingface_hub refuses such an index too). {}",
                  where, it.key(), shard, reason, kRedownload);
    shards[shard].push_back(it.key());
  }

  std::map<std::string, std::size_t> file_of_shard;
  for (const auto& [shard, names] : shards) {
    const fs::path p = dir_ / shard;
    std::error_code ec;
    ADAPT_REQUIRE(fs::is_regular_file(p, ec), IoError,
                  "{} lists shard '{}' for {} tensors (e.g. '{}'), but '{}' {}. The download is incomplete: "
                  "re-download the missing shard.",
                  where, shard, names.size(), names.front(), p.string(),
                  fs::exists(p, ec) ? "is not a regular file" : "does not exist");
    file_of_shard[shard] = files_.size();
    files_.push_back(std::make_unique<SafetensorsFile>(p));
  }

  // Every weight_map tensor must be in its shard.
  for (const auto& [shard, names] : shards) {
    const SafetensorsFile& f = *files_[file_of_shard[shard]];
    for (const auto& name : names) {
      if (f.find(name)) continue;
      std::string elsewhere;
      for (const auto& other : files_)
        if (other->find(name)) elsewhere = fmt::format(" (it is in '{}' instead)", other->path().filename().string());
      ADAPT_THROW(IoError,
                  "{} says tensor '{}' is in shard '{}', but that shard does not contain it{}. The index and the "
                  "shards come from different downloads or versions: re-download the model.",
                  where, name, shard, elsewhere);
    }
  }

  // No tensor in two shards.
  for (std::size_t k = 0; k < files_.size(); ++k) {
    for (const auto& t : files_[k]->tensors()) {
      auto [it, inserted] = tensors_.emplace(t.name, Entry{k, &t});
      ADAPT_REQUIRE(inserted, IoError,
                    "model folder '{}': tensor '{}' is in two shards, '{}' and '{}'; which copy is meant is "
                    "ambiguous. The shards come from different downloads or versions: re-download the model.",
                    dir_.string(), t.name, files_[it->second.file]->path().filename().string(),
                    files_[k]->path().filename().string());
    }
  }
}

std::vector<std::string> ShardedSafetensors::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, e] : tensors_) names.push_back(name);
  return names;
}

const TensorInfo* ShardedSafetensors::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.info;
}

const ShardedSafetensors::Entry& ShardedSafetensors::entry(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second;
  ADAPT_THROW(IoError,
              "tensor '{}' is not in model folder '{}'{} ({} tensors in {} files). Check that the model matches the "
              "configuration (architecture, number of layers, tied embeddings).",
              name, dir_.string(), did_you_mean(name, tensor_names()), tensors_.size(), files_.size());
}

const TensorInfo& ShardedSafetensors::info(std::string_view name) const { return *entry(name).info; }

const SafetensorsFile& ShardedSafetensors::file_of(std::string_view name) const { return *files_[entry(name).file]; }

std::uint64_t ShardedSafetensors::total_size_bytes() const {
  std::uint64_t n = 0;
  for (const auto& [name, e] : tensors_) n += e.info->size_bytes();
  return n;
}

std::uint64_t ShardedSafetensors::bytes_read() const {
  std::uint64_t n = 0;
  for (const auto& f : files_) n += f->bytes_read();
  return n;
}

}  // namespace adapt::io
