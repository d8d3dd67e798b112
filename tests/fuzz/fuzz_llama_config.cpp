// HF config.json (model/llama_config.h): every LlamaConfig field, rope scaling, eos lists, the
// checks of sizes against each other.
#include "model/llama_config.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  std::vector<std::string> seeds;
  for (const char* preset : {"tiny", "llama-3.1-8b", "llama-3.1-70b", "llama-2-7b"})
    seeds.push_back(model::llama_config_to_json(model::llama_config_preset(preset)));
  // As transformers writes Llama 3.1 (eos list, rope_scaling, torch_dtype, extra keys).
  seeds.push_back(R"({"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
 "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 128, "hidden_act": "silu",
 "hidden_size": 8192, "initializer_range": 0.02, "intermediate_size": 28672, "max_position_embeddings": 131072,
 "mlp_bias": false, "model_type": "llama", "num_attention_heads": 64, "num_hidden_layers": 80,
 "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0,
 "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
 "rope_type": "llama3"}, "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
 "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})");
  return seeds;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::refuse_ok([&] {
    const model::LlamaConfig c = model::llama_config_parse(text, "config.json");
    (void)model::llama_config_to_json(c);
    (void)model::llama_param_counts(c);
    (void)model::rope_inv_freq(c);
  });
  return 0;
}
