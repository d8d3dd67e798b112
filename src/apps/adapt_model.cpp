// adapt_model: make random-weight Llama models in HF layout (for tests, demos and benchmarks at any
// real model's shape), check model folders before a long job is queued, and merge a LoRA adapter into
// its base as a new model folder.
//
//   adapt_model make --out DIR (--preset NAME | --recipe FILE.toml [--set key=value]) [--layers N] [--dtype
//   bf16|f16|f32] [--seed S]
//                    [--max-shard-size 5GB] [--tokenizer PATH] [--corpus DIR] [--tied] [--force] [--dry-run]
//   adapt_model check DIR
//   adapt_model merge --model BASE --adapter ADAPTER_DIR --out DIR
//   adapt_model presets
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "adapters/adapter_merge.h"
#include "config/config_binder.h"
#include "config/config_printer.h"
#include "config/model_recipe_schema.h"
#include "core/app_main.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"
#include "model/llama_config.h"
#include "model/model_folder.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer_file_info.h"
#include "tokenizer/tokenizer_json.h"

namespace fs = std::filesystem;
using namespace adapt;

namespace {

constexpr const char* kUsage = R"(usage:
  adapt_model make --out DIR --preset NAME [options]   write a random-weight Llama model in HF layout
  adapt_model check DIR                                 validate a model folder and print its summary
  adapt_model merge --model BASE --adapter DIR --out DIR
                                                        write base + LoRA merged as a new model folder
  adapt_model presets                                   list the presets with their parameter counts

make options:
  --out DIR               output folder (must be empty or absent unless --force)
  --recipe FILE.toml      read the options below from a recipe (inputs/models/*.toml); flags given on the
                          command line win; --set key=value overrides single recipe keys (e.g.
                          --set shape.n_kv_heads=1)
  --preset NAME           tiny | bench | llama-3.1-8b | llama-3.1-70b | llama-3.1-405b | llama-2-7b | codellama-7b
  --layers N              override the number of layers (e.g. --layers 2 with llama-3.1-70b: a 70B-shaped
                          model small enough to test with)
  --dtype bf16|f16|f32    storage dtype of the weights (default bf16)
  --seed S                random seed (default 0); the same seed gives the same bytes
  --max-shard-size SIZE   largest shard, e.g. 5GB (default), 500MB; larger models are split with an index
  --tokenizer PATH        copy this tokenizer (Meta's tokenizer.model or an HF tokenizer.json) instead of
                          training the built-in byte-level BPE; the vocabulary and bos/eos follow it
  --corpus DIR            text to learn the built-in tokenizer's merges from (default: inputs/corpus)
  --merges N              merges of the built-in tokenizer (default: 512)
  --tied                  tie the output projection to the embeddings (tie_word_embeddings = true)
  --force                 replace an existing model in --out
  --dry-run               print the summary of what would be written, write nothing

merge options:
  --model DIR             the base model folder (HF layout)
  --adapter DIR           a PEFT LoRA folder, e.g. <run.dir>/adapter of adapt_train (of a lora+bottleneck
                          run: <run.dir>/adapter/lora; bottleneck adapters are nonlinear and cannot merge)
  --out DIR               the merged model: must not exist or be empty. W' = W + s*B*A for every LoRA
                          site, stored in the base's dtype (bf16 stays bf16); the base's safetensors files
                          (same shards, index), config.json, generation_config.json and tokenizer files
                          otherwise unchanged. Written to a temporary folder and renamed when complete.

exit codes:
  0 success; 2 bad command line; 3 the model folder is invalid or cannot be written (the message names
  the file and tensor), or the merge's --out exists and is not empty; 6 unsupported model (e.g. not a
  Llama) or adapter (a bottleneck adapter given to merge); 70 internal error.
)";

[[noreturn]] void usage_error(const std::string& msg) {
  ADAPT_THROW(ConfigError, "{}\nRun `adapt_model --help` for usage.", msg);
}

struct Args {
  std::string command;
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;
  std::vector<std::string> flags;
  std::vector<std::string> sets;  // repeatable --set key=value
};

Args parse_args(int argc, char** argv, const std::vector<std::string>& valued, const std::vector<std::string>& bare) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0) {
      if (a.command.empty()) {
        a.command = s;
      } else {
        a.positional.push_back(s);
      }
      continue;
    }
    std::string key = s, value;
    bool has_value = false;
    if (auto eq = s.find('='); eq != std::string::npos) {
      key = s.substr(0, eq);
      value = s.substr(eq + 1);
      has_value = true;
    }
    if (std::find(valued.begin(), valued.end(), key) != valued.end()) {
      if (!has_value) {
        if (i + 1 >= argc) usage_error(fmt::format("option {} needs a value", key));
        value = argv[++i];
      }
      if (key == "--set") {
        a.sets.push_back(value);
      } else {
        a.options[key] = value;
      }
    } else if (std::find(bare.begin(), bare.end(), key) != bare.end()) {
      a.flags.push_back(key);
    } else {
      std::vector<std::string> all = valued;
      all.insert(all.end(), bare.begin(), bare.end());
      usage_error(fmt::format("unknown option {}{}", key, did_you_mean(key, all)));
    }
  }
  return a;
}

bool has_flag(const Args& a, const std::string& f) {
  return std::find(a.flags.begin(), a.flags.end(), f) != a.flags.end();
}

std::int64_t int_option(const std::string& key, const std::string& v, std::int64_t min) {
  if (const std::optional<std::int64_t> x = parse_int(v); x && *x >= min) return *x;
  usage_error(fmt::format("{} must be an integer >= {}, got '{}'", key, min, v));
}

fs::path find_corpus() {
  std::vector<fs::path> candidates = {"inputs/corpus"};
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    candidates.push_back(fs::path(exe).parent_path() / "../../inputs/corpus");  // build/bin/adapt_model
  }
  candidates.push_back(fs::path(ADAPT_SOURCE_DIR) / "inputs/corpus");
  for (const auto& c : candidates) {
    if (fs::is_directory(c)) return fs::weakly_canonical(c);
  }
  ADAPT_THROW(IoError,
              "cannot find the corpus for the built-in tokenizer (looked for inputs/corpus here, beside the "
              "binary and in {}). Pass --corpus DIR or --tokenizer PATH.",
              ADAPT_SOURCE_DIR);
}

void print_summary(const model::ModelCheckReport& r, const fs::path& dir) {
  const auto& c = r.config;
  std::string rope = model::rope_type_name(c.rope_scaling.type);
  if (c.rope_scaling.type == model::RopeType::Llama3) {
    rope = fmt::format("llama3 (factor {}, original context {})", c.rope_scaling.factor,
                       c.rope_scaling.original_max_position_embeddings);
  } else if (c.rope_scaling.type == model::RopeType::Linear) {
    rope = fmt::format("linear (factor {})", c.rope_scaling.factor);
  }
  std::printf("%s",
              fmt::format("model folder      {}\n"
                          "layers            {}\n"
                          "hidden size       {}\n"
                          "heads             {} query / {} key-value (head_dim {}, {} query heads per KV head)\n"
                          "FFN size          {}\n"
                          "vocabulary        {}{}\n"
                          "context           {} positions, rope_theta {}, rope scaling {}\n"
                          "parameters        {} ({} per layer, {} embedding{})\n"
                          "weights           {} in {} shard(s), dtype {}\n"
                          "tensors           {}\n",
                          dir.string(), c.n_layers, c.hidden_size, c.n_heads, c.n_kv_heads, c.head_dim,
                          c.n_heads / c.n_kv_heads, c.intermediate_size, c.vocab_size,
                          c.tie_word_embeddings ? " (tied input/output embeddings)" : "", c.max_position_embeddings,
                          c.rope_theta, rope, format_count(r.params_in_files), format_count(r.expected.per_layer),
                          format_count(r.expected.embedding), c.tie_word_embeddings ? "" : " + the same for lm_head",
                          format_bytes(r.data_bytes), r.shards.size(), fmt::join(r.dtypes, ", "), r.expected.n_tensors)
                  .c_str());
  for (const auto& n : r.notes) std::printf("note              %s\n", n.c_str());
}

void print_tokenizer(const fs::path& dir, const model::LlamaConfig& cfg) {
  fs::path tok;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    if (fs::exists(dir / name)) {
      tok = dir / name;
      break;
    }
  }
  if (tok.empty()) {
    std::printf(
        "tokenizer         none here: put tokenizer.json or tokenizer.model in the folder, or name one with "
        "model.tokenizer in the job file of adapt_train or adapt_gen\n");
    return;
  }
  tokenizer::TokenizerFileInfo info = tokenizer::tokenizer_file_info(tok);
  std::printf("tokenizer         %s (%s, %lld tokens, bos %lld, eos %s)\n", tok.filename().c_str(), info.kind.c_str(),
              static_cast<long long>(info.vocab_size), static_cast<long long>(info.bos_id),
              fmt::format("{}", fmt::join(info.eos_ids, " ")).c_str());
  ADAPT_REQUIRE(info.vocab_size <= cfg.vocab_size, IoError,
                "{}: the tokenizer has {} tokens but config.json vocab_size is {}: ids beyond {} have no embedding. "
                "The tokenizer belongs to another model.",
                tok.string(), info.vocab_size, cfg.vocab_size, cfg.vocab_size - 1);
}

int cmd_presets() {
  std::printf("%-16s %8s %8s %10s %6s %8s %20s\n", "preset", "layers", "hidden", "heads/kv", "ffn", "vocab",
              "parameters");
  for (const auto& name : model::llama_preset_names()) {
    auto c = model::llama_config_preset(name);
    std::printf("%-16s %8lld %8lld %10s %6lld %8lld %20s\n", name.c_str(), static_cast<long long>(c.n_layers),
                static_cast<long long>(c.hidden_size), fmt::format("{}/{}", c.n_heads, c.n_kv_heads).c_str(),
                static_cast<long long>(c.intermediate_size), static_cast<long long>(c.vocab_size),
                format_count(model::llama_param_counts(c).total).c_str());
  }
  return 0;
}

int cmd_make(const Args& a) {
  if (!a.positional.empty()) usage_error(fmt::format("unexpected argument '{}'", a.positional[0]));
  auto opt = [&](const std::string& k) -> const std::string* {
    auto it = a.options.find(k);
    return it == a.options.end() ? nullptr : &it->second;
  };
  const bool dry_run = has_flag(a, "--dry-run");
  if (!opt("--out") && !dry_run) usage_error("make needs --out DIR");
  const fs::path out = opt("--out") ? fs::path(*opt("--out")) : fs::path();

  // Recipe file first, then command-line flags on top of it.
  model::ModelRecipe recipe;
  if (auto* v = opt("--recipe")) {
    recipe = config::load(*v, config::model_recipe_schema(), a.sets);
  } else if (!a.sets.empty()) {
    usage_error("--set overrides keys of a recipe: pass --recipe FILE.toml too");
  } else if (!opt("--preset")) {
    usage_error("make needs --preset NAME or --recipe FILE.toml");
  }
  if (auto* v = opt("--preset")) recipe.preset = *v;
  if (auto* v = opt("--layers")) recipe.layers = int_option("--layers", *v, 1);
  if (has_flag(a, "--tied")) recipe.tied = true;
  if (auto* v = opt("--seed")) recipe.seed = int_option("--seed", *v, 0);
  if (auto* v = opt("--dtype")) recipe.dtype = parse_dtype(*v);
  if (recipe.dtype != DType::BF16 && recipe.dtype != DType::F32 && recipe.dtype != DType::F16)
    usage_error(fmt::format("dtype must be bf16, f16 or f32, got '{}'", dtype_name(recipe.dtype)));
  if (auto* v = opt("--max-shard-size")) {
    auto b = parse_byte_size(*v);
    if (!b || *b == 0) usage_error(fmt::format("--max-shard-size must be a size such as 5GB or 500MB, got '{}'", *v));
    recipe.max_shard_size = *b;
  }
  if (auto* v = opt("--tokenizer")) recipe.tokenizer = fs::path(*v);
  if (auto* v = opt("--corpus")) recipe.corpus = fs::path(*v);
  if (auto* v = opt("--merges")) recipe.merges = int_option("--merges", *v, 0);

  model::LlamaConfig cfg = model::llama_config_from_recipe(recipe);
  model::RandomModelOptions ro;
  ro.seed = static_cast<std::uint64_t>(recipe.seed);
  ro.dtype = recipe.dtype;
  ro.max_shard_bytes = recipe.max_shard_size;
  const std::string preset = recipe.preset;
  const bool small_preset = preset == "tiny" || preset == "bench";

  // Tokenizer first: the vocabulary and the bos/eos ids of config.json follow it.
  std::vector<tokenizer::BpeMerge> merges;
  fs::path copy_from;
  if (recipe.tokenizer) {
    copy_from = *recipe.tokenizer;
    tokenizer::TokenizerFileInfo info = tokenizer::tokenizer_file_info(copy_from);
    if (small_preset && !recipe.shape.vocab_size) {
      cfg.vocab_size = info.vocab_size;
    } else {
      ADAPT_REQUIRE(info.vocab_size <= cfg.vocab_size, ConfigError,
                    "--tokenizer {} has {} tokens, more than the {} preset's vocab_size {}", copy_from.string(),
                    info.vocab_size, preset, cfg.vocab_size);
    }
    cfg.bos_token_id = info.bos_id;
    cfg.eos_token_ids = info.eos_ids;
  } else {
    const fs::path corpus = recipe.corpus ? *recipe.corpus : find_corpus();
    tokenizer::BpeTrainOptions to;
    to.n_merges = static_cast<int>(recipe.merges);
    Timer t;
    merges = tokenizer::bpe_train(tokenizer::bpe_corpus_read(corpus), to);
    log::info0("learned {} BPE merges from {} in {:.2f} s", merges.size(), corpus.string(), t.seconds());
    tokenizer::TokenizerJsonSummary s = tokenizer::tokenizer_json_summary(static_cast<std::int64_t>(merges.size()));
    if (preset == "tiny" && !recipe.shape.vocab_size) {
      cfg.vocab_size = s.vocab_size;
    } else {
      ADAPT_REQUIRE(s.vocab_size <= cfg.vocab_size, ConfigError,
                    "the built-in tokenizer ({} tokens) does not fit the "
                    "{} preset's vocab_size {}; use fewer --merges",
                    s.vocab_size, preset, cfg.vocab_size);
    }
    cfg.bos_token_id = s.bos_id;
    cfg.eos_token_ids = {s.end_of_text_id, s.eom_id, s.eot_id};
  }
  cfg.torch_dtype = ro.dtype;
  cfg.validate("the requested model");

  const model::ParamCounts pc = model::llama_param_counts(cfg);
  const std::uint64_t bytes = static_cast<std::uint64_t>(pc.total) * dtype_size(ro.dtype);
  if (dry_run) {
    std::printf("%s", fmt::format("would write a {} model: {} layers, {} parameters, {} tensors, {} as {} (shards up "
                                  "to {})\n",
                                  preset, cfg.n_layers, format_count(pc.total), pc.n_tensors, format_bytes(bytes),
                                  dtype_name(ro.dtype), format_bytes(ro.max_shard_bytes))
                          .c_str());
    std::printf("%s", model::llama_config_to_json(cfg).c_str());
    if (opt("--recipe"))
      std::printf("# resolved recipe\n%s", config::to_toml(recipe, config::model_recipe_schema()).c_str());
    return 0;
  }
  if (fs::exists(out) && !fs::is_empty(out)) {
    ADAPT_REQUIRE(has_flag(a, "--force"), IoError,
                  "'{}' already exists and is not empty; choose another --out or pass "
                  "--force to replace the model in it",
                  out.string());
    ADAPT_REQUIRE(fs::exists(out / "config.json") || !fs::exists(out / "model.safetensors.index.json"), IoError,
                  "'{}' does not look like a model folder; refusing to overwrite it", out.string());
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string n = e.path().filename().string();
      if (n == "config.json" || n == "generation_config.json" || n.find(".safetensors") != std::string::npos ||
          n.rfind("tokenizer", 0) == 0 || n == "special_tokens_map.json")
        fs::remove(e.path());
    }
  }
  fs::create_directories(out);
  Timer t;
  log::info0("writing {} ({} parameters, {}) to {}", preset, format_count(pc.total), format_bytes(bytes), out.string());
  if (!copy_from.empty()) {
    const fs::path dst = out / (copy_from.extension() == ".json" ? "tokenizer.json" : "tokenizer.model");
    fs::copy_file(copy_from, dst, fs::copy_options::overwrite_existing);
  } else {
    tokenizer::tokenizer_json_write(out, merges);
  }
  model::random_model_write(out, cfg, ro);
  const double secs = t.seconds();
  log::info0("wrote {} in {:.1f} s ({}/s)", format_bytes(bytes), secs,
             format_bytes(static_cast<std::uint64_t>(bytes / std::max(secs, 1e-3))));
  model::ModelCheckReport r = model::model_check(out);
  print_summary(r, out);
  print_tokenizer(out, r.config);
  return 0;
}

int cmd_check(const Args& a) {
  if (a.positional.size() != 1) usage_error("check needs exactly one model folder: adapt_model check DIR");
  const fs::path dir = a.positional[0];
  Timer t;
  model::ModelCheckReport r;
  try {
    r = model::model_check(dir);
    print_summary(r, dir);
    print_tokenizer(dir, r.config);
  } catch (const ConfigError& e) {
    // config.json problems make the folder invalid: same exit code as any other broken file.
    throw IoError(e.what(), e.where());
  }
  std::printf("ok                %s is a valid model folder (checked in %.2f s)\n", dir.c_str(), t.seconds());
  return 0;
}

int cmd_merge(const Args& a) {
  if (!a.positional.empty()) usage_error(fmt::format("unexpected argument '{}'", a.positional[0]));
  for (const char* k : {"--model", "--adapter", "--out"})
    if (!a.options.count(k))
      usage_error(fmt::format("merge needs {}: adapt_model merge --model BASE --adapter DIR --out DIR", k));
  const fs::path base = a.options.at("--model"), adapter = a.options.at("--adapter"), out = a.options.at("--out");
  Timer t;
  const adapters::MergeReport r = adapters::merged_model_write(base, adapter, out);
  log::info0("merged {} LoRA sites of {} into {} ({} in {} file(s), {:.1f} s)", r.n_sites, adapter.string(),
             out.string(), format_bytes(r.bytes), r.shards.size(), t.seconds());
  const model::ModelCheckReport check = model::model_check(out);
  print_summary(check, out);
  print_tokenizer(out, check.config);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return adapt::app_main([&]() -> int {
    // --help or -h anywhere (`adapt_model make --help` too): the whole usage on stdout.
    bool help = false;
    for (int i = 1; i < argc; ++i) help = help || std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h";
    if (argc < 2 || help) {
      std::fputs(kUsage, argc < 2 ? stderr : stdout);
      if (argc >= 2)
        std::printf("\nrecipe keys (--recipe FILE.toml, --set key=value):\n%s",
                    config::help(config::model_recipe_schema()).c_str());
      return argc < 2 ? static_cast<int>(ExitCode::Usage) : 0;
    }
    const std::string cmd = argv[1];
    if (cmd == "make") {
      return cmd_make(parse_args(argc, argv,
                                 {"--out", "--recipe", "--set", "--preset", "--layers", "--dtype", "--seed",
                                  "--max-shard-size", "--tokenizer", "--corpus", "--merges"},
                                 {"--tied", "--force", "--dry-run"}));
    }
    if (cmd == "check") return cmd_check(parse_args(argc, argv, {}, {}));
    if (cmd == "merge") return cmd_merge(parse_args(argc, argv, {"--model", "--adapter", "--out"}, {}));
    if (cmd == "presets") return cmd_presets();
    usage_error(fmt::format("unknown command '{}'{}", cmd, did_you_mean(cmd, {"make", "check", "merge", "presets"})));
  });
}
