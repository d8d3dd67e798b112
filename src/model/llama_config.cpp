#include "model/llama_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/strings.h"

namespace adapt::model {

using json = nlohmann::json;

namespace {

const char* json_type(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number_float()) return "a float";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// Strict field readers: a present field of the wrong type is an error naming file and key.
struct Reader {
  const json& obj;
  const std::string& source;
  std::string prefix;  // "rope_scaling." inside nested objects

  [[noreturn]] void wrong(const std::string& key, const char* want, const json& v) const {
    ADAPT_THROW(ConfigError,
                "{}: field '{}{}' must be {}, got {} ({}). Fix the file, or compare it with the config.json "
                "published with the model.",
                source, prefix, key, want, json_type(v), v.dump());
  }
  const json* get(const std::string& key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<std::int64_t> opt_int(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer() && !v->is_number_unsigned()) wrong(key, "an integer", *v);
    return v->get<std::int64_t>();
  }
  std::int64_t req_int(const std::string& key) const {
    auto v = opt_int(key);
    ADAPT_REQUIRE(v.has_value(), ConfigError,
                  "{}: required field '{}{}' is missing. A Llama config.json states it (e.g. \"{}\": 4096); restore it "
                  "from the model's original config.json.",
                  source, prefix, key, key);
    return *v;
  }
  std::optional<double> opt_float(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) wrong(key, "a number", *v);
    return v->get<double>();
  }
  std::optional<bool> opt_bool(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong(key, "true or false", *v);
    return v->get<bool>();
  }
  std::optional<std::string> opt_string(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong(key, "a string", *v);
    return v->get<std::string>();
  }
};

RopeScaling parse_rope_scaling(const json& rs, const std::string& source, const char* where) {
  ADAPT_REQUIRE(rs.is_object(), ConfigError, "{}: '{}' must be an object or null, got {}", source, where,
                json_type(rs));
  Reader r{rs, source, std::string(where) + "."};
  RopeScaling s;
  auto type = r.opt_string("rope_type");
  if (!type) type = r.opt_string("type");  // older spelling, aliased by transformers
  if (!type || *type == "default") return s;
  if (*type == "linear") {
    s.type = RopeType::Linear;
    auto f = r.opt_float("factor");
    ADAPT_REQUIRE(f && *f >= 1.0, ConfigError, "{}: {}.factor must be a number >= 1 for linear rope scaling", source,
                  where);
    s.factor = *f;
    return s;
  }
  if (*type == "llama3") {
    s.type = RopeType::Llama3;
    auto f = r.opt_float("factor");
    auto lo = r.opt_float("low_freq_factor");
    auto hi = r.opt_float("high_freq_factor");
    auto orig = r.opt_int("original_max_position_embeddings");
    ADAPT_REQUIRE(f && lo && hi && orig, ConfigError,
                  "{}: llama3 rope scaling needs factor, low_freq_factor, high_freq_factor and "
                  "original_max_position_embeddings in '{}' (Llama 3.1: 8.0, 1.0, 4.0, 8192)",
                  source, where);
    s.factor = *f;
    s.low_freq_factor = *lo;
    s.high_freq_factor = *hi;
    s.original_max_position_embeddings = *orig;
    return s;
  }
  ADAPT_THROW(UnsupportedError,
              "{}: rope scaling type '{}' is not supported; adapt implements default, linear and "
              "llama3 (the types Llama 2, CodeLlama and Llama 3.x use)",
              source, *type);
}

}  // namespace

LlamaConfig llama_config_parse(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    ADAPT_THROW(ConfigError, "{}: not valid JSON ({}). The file is damaged: restore it from the model's source.",
                source, e.what());
  }
  ADAPT_REQUIRE(j.is_object(), ConfigError, "{}: must be a JSON object, got {}", source, json_type(j));
  Reader r{j, source, ""};
  LlamaConfig c;
  c.model_type = r.opt_string("model_type").value_or("");
  ADAPT_REQUIRE(c.model_type == "llama", UnsupportedError,
                "{}: model_type is '{}', but adapt runs Llama-family models (model_type \"llama\": Llama 2, "
                "CodeLlama, Llama 3.x). Point model.path at a Llama model folder.",
                source, c.model_type);
  c.hidden_size = r.req_int("hidden_size");
  c.intermediate_size = r.req_int("intermediate_size");
  c.n_layers = r.req_int("num_hidden_layers");
  c.n_heads = r.req_int("num_attention_heads");
  c.vocab_size = r.req_int("vocab_size");
  c.n_kv_heads = r.opt_int("num_key_value_heads").value_or(c.n_heads);
  ADAPT_REQUIRE(c.n_heads > 0, ConfigError, "{}: num_attention_heads must be positive, got {}", source, c.n_heads);
  c.head_dim = r.opt_int("head_dim").value_or(c.hidden_size / c.n_heads);
  c.max_position_embeddings = r.opt_int("max_position_embeddings").value_or(2048);
  c.rms_norm_eps = r.opt_float("rms_norm_eps").value_or(1e-6);
  c.attention_bias = r.opt_bool("attention_bias").value_or(false);
  c.mlp_bias = r.opt_bool("mlp_bias").value_or(false);
  c.attention_dropout = r.opt_float("attention_dropout").value_or(0.0);
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings").value_or(false);
  c.hidden_act = r.opt_string("hidden_act").value_or("silu");
  c.initializer_range = r.opt_float("initializer_range").value_or(0.02);
  c.bos_token_id = r.opt_int("bos_token_id").value_or(1);
  c.pad_token_id = r.opt_int("pad_token_id");
  if (const json* eos = r.get("eos_token_id")) {
    c.eos_token_ids.clear();
    if (eos->is_array()) {
      for (const auto& e : *eos) {
        if (!e.is_number_integer()) r.wrong("eos_token_id", "an integer or a list of integers", *eos);
        c.eos_token_ids.push_back(e.get<std::int64_t>());
      }
    } else if (eos->is_number_integer()) {
      c.eos_token_ids.push_back(eos->get<std::int64_t>());
    } else {
      r.wrong("eos_token_id", "an integer or a list of integers", *eos);
    }
  }
  auto dtype = r.opt_string("torch_dtype");
  if (!dtype) dtype = r.opt_string("dtype");  // transformers v5 spelling
  if (dtype) {
    try {
      c.torch_dtype = parse_dtype(*dtype);
    } catch (const ConfigError&) {
      ADAPT_THROW(ConfigError, "{}: torch_dtype '{}' is not a floating type adapt reads (bfloat16, float16, float32)",
                  source, *dtype);
    }
  }
  // RoPE: transformers v5 keeps theta and scaling in rope_parameters; older files at top level.
  if (const json* rp = r.get("rope_parameters")) {
    ADAPT_REQUIRE(rp->is_object(), ConfigError, "{}: 'rope_parameters' must be an object", source);
    Reader rr{*rp, source, "rope_parameters."};
    c.rope_theta = rr.opt_float("rope_theta").value_or(10000.0);
    c.rope_scaling = parse_rope_scaling(*rp, source, "rope_parameters");
  } else {
    c.rope_theta = r.opt_float("rope_theta").value_or(10000.0);
    if (const json* rs = r.get("rope_scaling")) c.rope_scaling = parse_rope_scaling(*rs, source, "rope_scaling");
  }
  c.validate(source);
  return c;
}

void LlamaConfig::validate(const std::string& source) const {
  auto positive = [&](std::int64_t v, const char* key) {
    ADAPT_REQUIRE(v > 0, ConfigError, "{}: {} must be positive, got {}", source, key, v);
  };
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(n_layers, "num_hidden_layers");
  positive(n_heads, "num_attention_heads");
  positive(n_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(vocab_size, "vocab_size");
  positive(max_position_embeddings, "max_position_embeddings");
  ADAPT_REQUIRE(n_heads % n_kv_heads == 0, ConfigError,
                "{}: num_attention_heads = {} is not a multiple of num_key_value_heads = {} (grouped-query attention "
                "shares each KV head among a whole number of query heads)",
                source, n_heads, n_kv_heads);
  ADAPT_REQUIRE(head_dim % 2 == 0, ConfigError, "{}: head_dim = {} must be even for rotary embeddings", source,
                head_dim);
  ADAPT_REQUIRE(hidden_act == "silu", UnsupportedError,
                "{}: hidden_act '{}' is not supported; Llama models use \"silu\"", source, hidden_act);
  ADAPT_REQUIRE(rms_norm_eps > 0 && rope_theta > 0, ConfigError, "{}: rms_norm_eps and rope_theta must be positive",
                source);
  ADAPT_REQUIRE(is_float(torch_dtype), ConfigError, "{}: torch_dtype must be a floating type", source);
  ADAPT_REQUIRE(bos_token_id >= 0 && bos_token_id < vocab_size, ConfigError,
                "{}: bos_token_id = {} is outside the vocabulary [0, {})", source, bos_token_id, vocab_size);
  for (auto e : eos_token_ids)
    ADAPT_REQUIRE(e >= 0 && e < vocab_size, ConfigError, "{}: eos_token_id {} is outside the vocabulary [0, {})",
                  source, e, vocab_size);
  if (rope_scaling.type == RopeType::Llama3) {
    ADAPT_REQUIRE(rope_scaling.factor >= 1.0 && rope_scaling.high_freq_factor > rope_scaling.low_freq_factor &&
                      rope_scaling.low_freq_factor > 0 && rope_scaling.original_max_position_embeddings > 0,
                  ConfigError,
                  "{}: llama3 rope scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and a positive "
                  "original_max_position_embeddings",
                  source);
  }
}

void model_folder_require(const fs::path& dir, const std::string& given_as) {
  std::error_code ec;
  ADAPT_REQUIRE(fs::is_directory(dir, ec), IoError,
                "{} = '{}' {}: give a model folder in HF layout (config.json, *.safetensors and a tokenizer), or "
                "make a test model with `adapt_model make`",
                given_as, dir.string(), fs::exists(dir, ec) ? "is not a folder" : "does not exist");
}

LlamaConfig llama_config_load(const fs::path& model_dir) {
  const fs::path p = model_dir / "config.json";
  ADAPT_REQUIRE(fs::exists(p), IoError,
                "'{}' not found: a model folder in HF layout has config.json, *.safetensors and a tokenizer. Check "
                "the model folder (model.path in a job file, --model or DIR on the command line), or make a test "
                "model with `adapt_model make`.",
                p.string());
  return llama_config_parse(file_read_text(p), p.string());
}

std::vector<std::int64_t> model_eos_token_ids(const fs::path& model_dir) {
  for (const char* name : {"generation_config.json", "config.json"}) {
    const fs::path p = model_dir / name;
    if (!fs::exists(p)) continue;
    const json j = json::parse(file_read_text(p), nullptr, /*allow_exceptions=*/false);
    ADAPT_REQUIRE(!j.is_discarded(), IoError, "'{}' is not valid JSON; restore the model's file", p.string());
    if (!j.is_object() || !j.contains("eos_token_id") || j["eos_token_id"].is_null()) continue;
    const json& e = j["eos_token_id"];
    std::vector<std::int64_t> ids;
    for (const json& v : e.is_array() ? e : json::array({e})) {
      ADAPT_REQUIRE(v.is_number_integer() && v.get<std::int64_t>() >= 0, IoError,
                    "'{}': eos_token_id must be a token id or a list of them, not {}", p.string(), e.dump());
      ids.push_back(v.get<std::int64_t>());
    }
    if (!ids.empty()) return ids;
  }
  return {};
}

std::string rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Llama3: return "llama3";
  }
  return "?";
}

std::string llama_config_to_json(const LlamaConfig& c) {
  json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = c.hidden_act;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == RopeType::Default) {
    j["rope_scaling"] = nullptr;
  } else if (c.rope_scaling.type == RopeType::Linear) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
  } else {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  }
  j["attention_bias"] = c.attention_bias;
  j["mlp_bias"] = c.mlp_bias;
  j["attention_dropout"] = c.attention_dropout;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["vocab_size"] = c.vocab_size;
  j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  j["torch_dtype"] = c.torch_dtype == DType::BF16 ? "bfloat16" : c.torch_dtype == DType::F16 ? "float16" : "float32";
  j["initializer_range"] = c.initializer_range;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  return j.dump(2) + "\n";
}

std::vector<std::string> llama_preset_names() {
  return {"tiny", "bench", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-2-7b", "codellama-7b"};
}

LlamaConfig llama_config_preset(const std::string& name) {
  LlamaConfig c;
  auto llama31 = [&](std::int64_t hidden, std::int64_t ffn, std::int64_t layers, std::int64_t heads) {
    c.hidden_size = hidden;
    c.intermediate_size = ffn;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = 8;
    c.head_dim = 128;
    c.vocab_size = 128256;
    c.max_position_embeddings = 131072;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 500000.0;
    c.rope_scaling = {RopeType::Llama3, 8.0, 1.0, 4.0, 8192};
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001, 128008, 128009};
  };
  auto llama2 = [&](std::int64_t vocab, double theta, std::int64_t max_pos) {
    c.hidden_size = 4096;
    c.intermediate_size = 11008;
    c.n_layers = 32;
    c.n_heads = 32;
    c.n_kv_heads = 32;
    c.head_dim = 128;
    c.vocab_size = vocab;
    c.max_position_embeddings = max_pos;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = theta;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  };
  if (name == "tiny") {
    // Small enough for unit tests, yet exercises GQA (2 query heads per KV head) and all three bands
    // of llama3 rope scaling (original context 64 < max 512).
    c.hidden_size = 64;
    c.intermediate_size = 176;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    c.vocab_size = 1024;
    c.max_position_embeddings = 512;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 500000.0;
    c.rope_scaling = {RopeType::Llama3, 8.0, 1.0, 4.0, 64};
    c.bos_token_id = 0;  // set from the tokenizer by adapt_model make
    c.eos_token_ids = {0};
  } else if (name == "bench") {
    // The fixed ~101M-parameter shape of every CPU benchmark.
    c.hidden_size = 768;
    c.intermediate_size = 2048;
    c.n_layers = 8;
    c.n_heads = 12;
    c.n_kv_heads = 4;
    c.head_dim = 64;
    c.vocab_size = 32000;
    c.max_position_embeddings = 8192;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 500000.0;
    c.bos_token_id = 0;
    c.eos_token_ids = {0};
  } else if (name == "llama-3.1-8b") {
    llama31(4096, 14336, 32, 32);
  } else if (name == "llama-3.1-70b") {
    llama31(8192, 28672, 80, 64);
  } else if (name == "llama-3.1-405b") {
    llama31(16384, 53248, 126, 128);
  } else if (name == "llama-2-7b") {
    llama2(32000, 10000.0, 4096);
    c.torch_dtype = DType::F16;
  } else if (name == "codellama-7b") {
    llama2(32016, 1000000.0, 16384);
  } else {
    ADAPT_THROW(ConfigError, "unknown preset '{}'{}: choose one of {}", name, did_you_mean(name, llama_preset_names()),
                join(llama_preset_names(), ", "));
  }
  return c;
}

LlamaConfig llama_config_from_recipe(const ModelRecipe& r) {
  LlamaConfig c = llama_config_preset(r.preset);
  const ShapeOverrides& s = r.shape;
  if (r.layers) c.n_layers = *r.layers;
  c.tie_word_embeddings = r.tied;
  if (s.hidden_size) c.hidden_size = *s.hidden_size;
  if (s.intermediate_size) c.intermediate_size = *s.intermediate_size;
  if (s.n_heads) c.n_heads = *s.n_heads;
  if (s.n_kv_heads) c.n_kv_heads = *s.n_kv_heads;
  if (s.head_dim) {
    c.head_dim = *s.head_dim;
  } else if (s.hidden_size || s.n_heads) {
    c.head_dim = c.hidden_size / c.n_heads;
  }
  if (s.vocab_size) c.vocab_size = *s.vocab_size;
  if (s.max_position_embeddings) c.max_position_embeddings = *s.max_position_embeddings;
  if (s.rope_theta) c.rope_theta = *s.rope_theta;
  if (s.rope_type) {
    if (*s.rope_type == "default") {
      c.rope_scaling = {};
    } else if (*s.rope_type == "linear") {
      c.rope_scaling = {RopeType::Linear, s.rope_factor.value_or(2.0), 1.0, 4.0, 0};
    } else {
      c.rope_scaling = {
          RopeType::Llama3, s.rope_factor.value_or(8.0), 1.0, 4.0,
          s.rope_original_max_position_embeddings.value_or(c.rope_scaling.original_max_position_embeddings
                                                               ? c.rope_scaling.original_max_position_embeddings
                                                               : 8192)};
    }
  } else {
    if (s.rope_factor) c.rope_scaling.factor = *s.rope_factor;
    if (s.rope_original_max_position_embeddings)
      c.rope_scaling.original_max_position_embeddings = *s.rope_original_max_position_embeddings;
  }
  ADAPT_REQUIRE(c.n_heads % c.n_kv_heads == 0, ConfigError, "shape.n_kv_heads = {} does not divide shape.n_heads = {}",
                c.n_kv_heads, c.n_heads);
  return c;
}

ParamCounts llama_param_counts(const LlamaConfig& c) {
  ParamCounts p;
  const std::int64_t C = c.hidden_size, F = c.intermediate_size, D = c.head_dim;
  const std::int64_t q = c.n_heads * D, kv = c.n_kv_heads * D;
  p.embedding = c.vocab_size * C;
  p.lm_head = c.tie_word_embeddings ? 0 : c.vocab_size * C;
  p.per_layer = C * q + 2 * C * kv + q * C + 3 * C * F + 2 * C;
  if (c.attention_bias) p.per_layer += q + 2 * kv + C;
  if (c.mlp_bias) p.per_layer += 2 * F + C;
  p.final_norm = C;
  p.total = p.embedding + p.lm_head + c.n_layers * p.per_layer + p.final_norm;
  const std::int64_t per_layer_tensors = 9 + (c.attention_bias ? 4 : 0) + (c.mlp_bias ? 3 : 0);
  p.n_tensors = 2 + (c.tie_word_embeddings ? 0 : 1) + c.n_layers * per_layer_tensors;
  return p;
}

std::vector<float> rope_inv_freq(const LlamaConfig& c) {
  const std::int64_t half = c.head_dim / 2;
  std::vector<float> inv(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i) {
    // HF: 1 / theta ** (arange(0, D, 2).float() / D), in float32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[static_cast<std::size_t>(i)] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeType::Linear) {
    for (auto& f : inv) f = f / static_cast<float>(s.factor);
  } else if (s.type == RopeType::Llama3) {
    const float old = static_cast<float>(s.original_max_position_embeddings);
    const float low_wavelen = old / static_cast<float>(s.low_freq_factor);
    const float high_wavelen = old / static_cast<float>(s.high_freq_factor);
    const float factor = static_cast<float>(s.factor);
    for (auto& f : inv) {
      const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = f / factor;
      } else {
        const float smooth = (old / wavelen - static_cast<float>(s.low_freq_factor)) /
                             static_cast<float>(s.high_freq_factor - s.low_freq_factor);
        f = (1.0f - smooth) * f / factor + smooth * f;
      }
    }
  }
  return inv;
}

}  // namespace adapt::model
