#include "train/data_config_check.h"

#include "core/error.h"
#include "core/strings.h"
#include "train/data_glob.h"

namespace adapt::train {

std::string data_format_name(DataFormat format) {
  for (const auto& [name, value] : data_format_names())
    if (value == format) return name;
  return "?";
}

std::string data_format_name(const std::optional<DataFormat>& format) {
  return format ? data_format_name(*format) : "auto";
}

DataFormat data_format_parse(std::string_view name) {
  std::vector<std::string> names;
  for (const auto& [n, value] : data_format_names()) {
    if (n == name) return value;
    names.push_back(n);
  }
  ADAPT_THROW(ConfigError, "data.format = \"{}\" is not a known format{}; choose one of \"{}\"", name,
              did_you_mean(name, names), join(names, "\", \""));
}

void data_config_validate(const DataConfig& c, std::int64_t model_context) {
  ADAPT_REQUIRE(!c.inputs.empty(), ConfigError,
                "data.inputs is empty; list JSON Lines files or source folders, e.g. data.inputs = [\"corpus/\"]");
  for (std::size_t i = 0; i < c.inputs.size(); ++i)
    ADAPT_REQUIRE(!c.inputs[i].empty(), ConfigError, "data.inputs[{}] is an empty path", i);
  for (std::size_t i = 0; i < c.eval_inputs.size(); ++i)
    ADAPT_REQUIRE(!c.eval_inputs[i].empty(), ConfigError, "data.eval_inputs[{}] is an empty path", i);
  for (std::size_t g = 0; g < c.globs.size(); ++g) {
    const std::string problem = glob_problem(c.globs[g]);
    ADAPT_REQUIRE(problem.empty(), ConfigError, "data.globs[{}] = \"{}\" {}", g, c.globs[g], problem);
  }
  ADAPT_REQUIRE(c.seq_len > 0, ConfigError, "data.seq_len = {} must be > 0", c.seq_len);
  ADAPT_REQUIRE(c.seq_len <= model_context, ConfigError,
                "data.seq_len = {} exceeds the model's context of {}; set data.seq_len <= {}", c.seq_len, model_context,
                model_context);
  ADAPT_REQUIRE(!c.eval_fraction || (*c.eval_fraction > 0.0 && *c.eval_fraction < 1.0), ConfigError,
                "data.eval_fraction = {} must be in (0, 1); leave it unset for no eval split",
                c.eval_fraction.value_or(0));
  ADAPT_REQUIRE(!c.eval_documents || *c.eval_documents >= 1, ConfigError,
                "data.eval_documents = {} must be >= 1; leave it unset for no eval split",
                c.eval_documents.value_or(0));
  ADAPT_REQUIRE(!(c.eval_fraction && c.eval_documents), ConfigError,
                "data.eval_fraction = {} and data.eval_documents = {} both ask for an eval split; set only one",
                c.eval_fraction.value_or(0), c.eval_documents.value_or(0));
  ADAPT_REQUIRE(c.eval_inputs.empty() || (!c.eval_fraction && !c.eval_documents), ConfigError,
                "data.eval_inputs is set, so data.eval_fraction and data.eval_documents must stay unset (the eval "
                "data comes from data.eval_inputs alone)");
  ADAPT_REQUIRE(c.seed >= 0, ConfigError, "data.seed = {} must be >= 0", c.seed);
  ADAPT_REQUIRE(!c.cache_dir.empty(), ConfigError,
                "data.cache_dir is not set; name a folder (shared by all ranks) for the tokenized data");
  ADAPT_REQUIRE(!c.tokenize_threads || (*c.tokenize_threads >= 1 && *c.tokenize_threads <= 4096), ConfigError,
                "data.tokenize_threads = {} must be in [1, 4096]; leave it unset for all hardware threads",
                c.tokenize_threads.value_or(0));
  ADAPT_REQUIRE(!c.loss_on_completions_only || (c.format != DataFormat::Text && c.format != DataFormat::Raw),
                ConfigError,
                "data.loss_on_completions_only = true but data.format = \"{}\": those records have no completions; "
                "use prompt_completion or chat data, or set data.loss_on_completions_only = false",
                data_format_name(c.format));
  ADAPT_REQUIRE(c.pack || !c.cross_document_attention, ConfigError,
                "data.cross_document_attention = true needs data.pack = true (unpacked rows hold one document)");
}

}  // namespace adapt::train
