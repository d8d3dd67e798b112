// Generation on one rank with a batch scheduler: up to batch_size sequences in flight, each in its own
// KV-cache row. A free row takes the next prompt, prefilled alone (B = 1) after the positions it shares
// with what another row holds are copied from there (GenerateOptions::share_prefixes); busy rows decode
// together, one token each per step at their own positions; a finished sequence is handed back at once
// and its row goes to the next prompt. Prefill alone and row-independent decoding keep a sequence's tokens
// the same whatever it is batched with (generator_test.cpp; bit-exact logits on the CPU up to 32
// rows, 8 without AVX-512).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "comm/communicator.h"
#include "generate/sampler.h"
#include "generate/sequence.h"
#include "generate/stop.h"
#include "model/adapter_hook.h"
#include "model/kv_cache.h"
#include "model/llama_weights.h"
#include "ops/workspace.h"
#include "tokenizer/tokenizer.h"

namespace adapt::generate {

/// The KV cache a batch of requests needs: `rows` sequences of up to `capacity` positions each.
struct BatchPlan {
  std::int64_t rows = 0;              // min(batch_size, number of requests)
  std::int64_t capacity = 0;          // the longest prompt + max_new_tokens (capped to the context)
  std::uint64_t kv_cache_bytes = 0;   // keys and values of every layer the rank holds
  std::int64_t layers = 0;            // the layers the rank holds (a pipeline stage's)
  std::int64_t device_layers = 0;     // of those, kept next to the weights; the rest spill to host RAM
  std::uint64_t kv_device_bytes = 0;  // next to the weights (with spill: the device layers + 2 staging layers)
  std::uint64_t kv_host_bytes = 0;    // spilled to host RAM
};

/// How run_batch feeds prompts and places the KV cache.
struct GenerateOptions {
  /// Prompt tokens per forward: a long prompt is prefilled in pieces of this many tokens, so the
  /// activations stay those of `prefill_chunk` tokens whatever the prompt's length. 0: whole prompts.
  std::int64_t prefill_chunk = 512;
  /// Layers whose KV cache stays next to the weights; the others spill to host RAM (model/kv_cache.h).
  /// −1: on a GPU as many as fit in its free memory after the activations (kv_device_layers_fit), on
  /// the host all of them (host memory already).
  std::int64_t kv_device_layers = -1;
  /// Element type of the KV cache: F32, or BF16 (half the memory; model/kv_cache.h).
  DType kv_dtype = DType::F32;
  /// A sequence's progress goes to BatchHooks::on_progress after every this many generated tokens
  /// (0: only when the run stops on BatchHooks::stop).
  std::int64_t progress_every = 0;
  /// Prefix sharing: a prompt whose first tokens are those another row of the cache holds (a sequence
  /// in flight, or the last one a free row held) gets their keys and values copied into its row and
  /// prefills only the rest. Positions are shared only where every token up to them is the same, so
  /// what is copied is what its prefill would compute (up to the last bits where the two were computed
  /// in pieces of other sizes, as with a stored prefix).
  bool share_prefixes = true;
  /// Tokens that end a reply besides the tokenizer's end tokens (Tokenizer::eos_ids: <|end_of_text|>,
  /// <|eom_id|>, <|eot_id|>, </s>): the model's own eos_token_id (model::model_eos_token_ids).
  std::vector<std::int32_t> eos_ids;
};

/// The layers whose KV cache fits in `free_bytes` of device memory when a forward of `tokens`
/// positions (the prefill chunk, or one decode step of every row) also needs its activations
/// (estimated, with a margin); at most `layers`. With spill, two staging layers are counted too.
std::int64_t kv_device_layers_fit(const model::LlamaConfig& cfg, int tp_size, std::int64_t rows, std::int64_t capacity,
                                  std::int64_t layers, std::int64_t tokens, std::uint64_t free_bytes,
                                  DType kv_dtype = DType::F32);

/// Largest number of new tokens a prompt of `n_prompt` tokens can get within `cfg`'s context
/// (max_position_embeddings), 0 when the prompt fills it.
std::int64_t room_after(const model::LlamaConfig& cfg, std::int64_t n_prompt);

class Generator {
 public:
  /// Called as soon as request `index` finishes, in finishing order (not request order).
  using OnFinished = std::function<void(std::size_t index, GenerationOutput&& output)>;
  /// Called with text of request `index` as it becomes final (for streaming).
  using OnText = std::function<void(std::size_t index, std::string_view text)>;
  /// Called with where unfinished request `index` stands (to save it; GenerationRequest::resume).
  using OnProgress = std::function<void(std::size_t index, SequenceProgress&& progress)>;

  struct BatchHooks {
    OnFinished on_finished;  // required
    OnText on_text;
    /// Every GenerateOptions::progress_every tokens of a sequence, and for every sequence in flight
    /// when the run stops.
    OnProgress on_progress;
    /// Asked after every prefill and decode step; true: the run hands every sequence in flight to
    /// on_progress and returns false, leaving the pending requests unstarted. Must answer alike on
    /// every rank of a model split over tp / pp (they run each step together).
    std::function<bool()> stop;
    /// Optional. Before request `index` is prefilled into empty `row`: may load the keys and values of
    /// a prefix of `tokens` (what the row is about to be fed) into the row (KvCache::write_row for every
    /// layer held) and return how many positions it loaded, at most tokens.size() − 1; the generator
    /// marks them filled and prefills the rest. 0: prefill everything. Must answer alike on every rank
    /// of a model split over tp / pp.
    std::function<std::int64_t(std::size_t index, model::KvCache& cache, std::int64_t row,
                               std::span<const std::int32_t> tokens)>
        load_prefix;
    /// Optional. When request `index` has finished, before its row is freed: `tokens` are those whose
    /// keys and values the row holds (its prompt and generated tokens but the last one sampled).
    std::function<void(std::size_t index, model::KvCache& cache, std::int64_t row,
                       std::span<const std::int32_t> tokens)>
        save_prefix;
  };

  /// `model` and `tokenizer` must outlive the generator. ConfigError when the tokenizer's vocabulary
  /// does not fit the model's embedding. Not thread-safe: one run at a time per generator (it owns the
  /// activation workspace). A model on a CUDA device (model::llama_model_to_device) generates there:
  /// the workspace and the KV cache are allocated on its device, and only the logits of the positions
  /// the sampler reads come back to the host.
  Generator(const model::LlamaModel& model, const tokenizer::Tokenizer& tokenizer);

  /// Largest number of new tokens a prompt of `n_prompt` tokens can get within the context.
  std::int64_t room_after(std::int64_t n_prompt) const;

  /// The KV cache run_batch allocates for these requests and where (for the memory printout). With
  /// kv_device_layers = −1 on a GPU it asks the device for its free memory.
  BatchPlan plan_batch(std::span<const GenerationRequest> requests, std::int64_t batch_size) const;

  /// Prefill chunk and KV-cache placement and type (GenerateOptions). ConfigError when
  /// prefill_chunk < 0, kv_device_layers < −1 or kv_dtype is neither F32 nor BF16.
  void set_options(const GenerateOptions& options);
  const GenerateOptions& options() const { return options_; }
  /// The activations' workspace at its largest so far (the largest llama_forward call of every
  /// run_batch: model::llama_forward_workspace_bytes).
  std::size_t workspace_high_water_bytes() const { return workspace_.high_water_bytes(); }

  /// Generates for every request with up to `batch_size` in flight (see the file comment). Each
  /// request's max_new_tokens is capped at room_after(prompt size) (the output then ends with finish
  /// reason "length"). ConfigError before anything runs when a prompt is empty or fills the context
  /// alone, or batch_size < 1. An exception from a callback stops the run and propagates.
  void run_batch(std::span<const GenerationRequest> requests, std::int64_t batch_size, const OnFinished& on_finished,
                 const OnText& on_text = {});
  /// The same with progress reports and a stop request (BatchHooks). Returns true when every request
  /// finished, false when `hooks.stop` stopped the run. A request with `resume` tokens continues from
  /// them (its prompt and those tokens are prefilled together).
  bool run_batch(std::span<const GenerationRequest> requests, std::int64_t batch_size, const BatchHooks& hooks);

  /// One prompt (a batch of one). `on_text` receives text as it becomes final.
  GenerationOutput run(std::span<const std::int32_t> prompt, const SamplingParams& sampling,
                       const std::vector<std::string>& stop_strings, std::int64_t max_new_tokens,
                       const std::function<void(std::string_view)>& on_text = {});

  /// Adapters to apply (an adapters::AdapterSet loaded from an adapter folder); null: the base model.
  /// The hook must outlive the generator.
  void set_hook(model::AdapterHook* hook) { hook_ = hook; }
  /// For a model holding one pipeline stage (model.stage): its pp communicator. Every stage then runs
  /// the same requests together (model::llama_forward) and samples the same tokens.
  void set_pipeline(comm::Communicator* pp) { pp_ = pp; }

 private:
  const model::LlamaModel& model_;
  model::AdapterHook* hook_ = nullptr;
  comm::Communicator* pp_ = nullptr;
  const tokenizer::Tokenizer& tokenizer_;
  std::vector<std::int32_t> eos_;  // the tokenizer's end tokens and options_.eos_ids
  ops::Workspace workspace_;
  GenerateOptions options_;

  std::int64_t n_new_of(const GenerationRequest& r) const;
  // Tokens per prefill forward of a prompt of `n_prompt` tokens (prefill_chunk, or the whole prompt).
  std::int64_t prefill_piece(std::int64_t n_prompt) const;
};

}  // namespace adapt::generate
