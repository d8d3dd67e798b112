#include "config/model_recipe_schema.h"

namespace adapt::config {

const Schema<model::ModelRecipe>& model_recipe_schema() {
  static const Schema<model::ModelRecipe> schema = [] {
    using model::ShapeOverrides;
    Schema<ShapeOverrides> shape;
    shape.field("hidden_size", &ShapeOverrides::hidden_size, "Model width C.").at_least(std::int64_t{1});
    shape.field("intermediate_size", &ShapeOverrides::intermediate_size, "SwiGLU width F.").at_least(std::int64_t{1});
    shape.field("n_heads", &ShapeOverrides::n_heads, "Query heads H.").at_least(std::int64_t{1});
    shape.field("n_kv_heads", &ShapeOverrides::n_kv_heads, "Key/value heads Hkv (GQA); must divide n_heads.")
        .at_least(std::int64_t{1});
    shape.field("head_dim", &ShapeOverrides::head_dim, "Per-head width D.").at_least(std::int64_t{2});
    shape.field("vocab_size", &ShapeOverrides::vocab_size, "Vocabulary rows V (at least the tokenizer's size).")
        .at_least(std::int64_t{1});
    shape.field("max_position_embeddings", &ShapeOverrides::max_position_embeddings, "Context length.")
        .at_least(std::int64_t{1});
    shape.field("rope_theta", &ShapeOverrides::rope_theta, "RoPE base.").greater_than(0.0);
    shape.field("rope_type", &ShapeOverrides::rope_type, "RoPE scaling: default, linear or llama3.")
        .one_of({"default", "linear", "llama3"});
    shape.field("rope_factor", &ShapeOverrides::rope_factor, "Scaling factor (linear, llama3).").at_least(1.0);
    shape
        .field("rope_original_max_position_embeddings", &ShapeOverrides::rope_original_max_position_embeddings,
               "llama3: context length before scaling.")
        .at_least(std::int64_t{1});

    using model::ModelRecipe;
    Schema<ModelRecipe> s;
    s.field("preset", &ModelRecipe::preset, "Shape to start from.")
        .one_of({"tiny", "bench", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-2-7b", "codellama-7b"});
    s.field("layers", &ModelRecipe::layers, "Number of layers (default: the preset's).").at_least(std::int64_t{1});
    s.field("dtype", &ModelRecipe::dtype, "Storage dtype of the weights: bf16, f16 or f32.");
    s.field("seed", &ModelRecipe::seed, "Random seed; the same seed gives the same bytes.").at_least(std::int64_t{0});
    s.byte_size("max_shard_size", &ModelRecipe::max_shard_size, "Largest shard file, e.g. \"5GB\".");
    s.field("tied", &ModelRecipe::tied, "Tie lm_head to the embeddings.");
    s.field("tokenizer", &ModelRecipe::tokenizer, "Copy this tokenizer (tokenizer.model or tokenizer.json).");
    s.field("corpus", &ModelRecipe::corpus, "Folder of text to learn the built-in tokenizer's merges from.");
    s.field("merges", &ModelRecipe::merges, "Merges of the built-in byte-level BPE tokenizer.")
        .at_least(std::int64_t{0});
    s.table("shape", &ModelRecipe::shape, shape, "Overrides of the preset's shape.");
    return s;
  }();
  return schema;
}

}  // namespace adapt::config
