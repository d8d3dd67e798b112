#include "generate/generator.h"

#include <algorithm>
#include <exception>
#include <memory>

#include "backend/backend.h"
#include "core/error.h"
#include "model/kv_cache.h"
#include "model/llama_device.h"
#include "model/llama_forward.h"
#include "model/tensor_parallel.h"

namespace adapt::generate {

Generator::Generator(const model::LlamaModel& model, const tokenizer::Tokenizer& tokenizer)
    : model_(model),
      tokenizer_(tokenizer),
      eos_(tokenizer.eos_ids().begin(), tokenizer.eos_ids().end()),
      workspace_(model::model_allocator(model)) {
  ADAPT_REQUIRE(tokenizer.n_vocab() <= model.config.vocab_size, ConfigError,
                "the tokenizer ({}) has {} tokens but the model's vocab_size is {}: ids beyond {} have no embedding. "
                "Use the tokenizer that belongs to the model in '{}'.",
                tokenizer.description(), tokenizer.n_vocab(), model.config.vocab_size, model.config.vocab_size - 1,
                model.dir.string());
}

std::int64_t room_after(const model::LlamaConfig& cfg, std::int64_t n_prompt) {
  return std::max<std::int64_t>(0, cfg.max_position_embeddings - n_prompt);
}

std::int64_t Generator::room_after(std::int64_t n_prompt) const {
  return generate::room_after(model_.config, n_prompt);
}

std::int64_t Generator::n_new_of(const GenerationRequest& r) const {
  return std::min(r.max_new_tokens, room_after(static_cast<std::int64_t>(r.prompt.size())));
}

std::int64_t kv_device_layers_fit(const model::LlamaConfig& cfg, int tp_size, std::int64_t rows, std::int64_t capacity,
                                  std::int64_t layers, std::int64_t tokens, std::uint64_t free_bytes, DType kv_dtype) {
  const model::TpLocalDims part = model::tp_local_dims(cfg, {.size = tp_size});
  // llama_forward's workspace for `tokens` positions: hidden, normed, sub-block output and block output
  // (C each), q and attention output (H·D), k and v (Hkv·D), gate and up (F), in f32; the logits of the
  // last positions; twice that as the margin for the GEMM and attention scratch, the adapters' terms
  // and the allocator's rounding, plus 1 GiB for the libraries' workspaces.
  const std::int64_t per_token =
      4 * cfg.hidden_size + 2 * part.heads * cfg.head_dim + 2 * part.kv_heads * cfg.head_dim + 2 * part.ffn;
  const std::uint64_t activations =
      2 * static_cast<std::uint64_t>(tokens * per_token + rows * cfg.vocab_size) * sizeof(float) + (1ull << 30);
  if (free_bytes <= activations) return 0;
  return model::KvCache::device_layers_within(
      free_bytes - activations, model::KvCache::bytes_needed(cfg, rows, capacity, tp_size, 1, kv_dtype), layers);
}

std::int64_t Generator::prefill_piece(std::int64_t n_prompt) const {
  return options_.prefill_chunk > 0 ? std::min(options_.prefill_chunk, n_prompt) : n_prompt;
}

void Generator::set_options(const GenerateOptions& options) {
  ADAPT_REQUIRE(options.prefill_chunk >= 0, ConfigError,
                "runtime.prefill_chunk = {} must be 0 (whole prompts) or a number of tokens", options.prefill_chunk);
  ADAPT_REQUIRE(options.kv_device_layers >= -1, ConfigError,
                "runtime.kv_device_layers = {} must be -1 (as many as fit) or a number of layers >= 0",
                options.kv_device_layers);
  ADAPT_REQUIRE(options.kv_dtype == DType::F32 || options.kv_dtype == DType::BF16, ConfigError,
                "runtime.kv_cache_dtype = {} must be f32 or bf16", dtype_name(options.kv_dtype));
  for (const std::int32_t id : options.eos_ids)
    ADAPT_REQUIRE(id >= 0 && id < tokenizer_.n_vocab(), ConfigError,
                  "the model's eos_token_id {} is not a token of the tokenizer ({}, {} tokens); fix eos_token_id in "
                  "the model's generation_config.json or config.json",
                  id, tokenizer_.description(), tokenizer_.n_vocab());
  options_ = options;
  eos_.assign(tokenizer_.eos_ids().begin(), tokenizer_.eos_ids().end());
  for (const std::int32_t id : options.eos_ids)
    if (std::find(eos_.begin(), eos_.end(), id) == eos_.end()) eos_.push_back(id);
}

BatchPlan Generator::plan_batch(std::span<const GenerationRequest> requests, std::int64_t batch_size) const {
  BatchPlan p;
  p.rows = std::min<std::int64_t>(batch_size, static_cast<std::int64_t>(requests.size()));
  std::int64_t longest_prompt = 0;
  for (const GenerationRequest& r : requests) {
    p.capacity = std::max(p.capacity, static_cast<std::int64_t>(r.prompt.size()) + n_new_of(r));
    longest_prompt = std::max(longest_prompt, static_cast<std::int64_t>(r.prompt.size()));
  }
  if (p.rows <= 0 || p.capacity <= 0) return p;
  const model::LlamaConfig& c = model_.config;
  p.layers = model::stage_layer_range(c, model_.stage).count;
  p.device_layers = options_.kv_device_layers < 0 ? p.layers : std::min(options_.kv_device_layers, p.layers);
  const Device device = model::model_device(model_);
  if (options_.kv_device_layers < 0 && !device.host_accessible()) {
    // What the device has free, plus what its caching allocator holds unused.
    const backend::MemoryInfo info = backend::cuda_memory_info(device.index);
    const backend::MemoryStats stats = backend::cuda_memory_stats(device.index);
    if (info.known) {
      p.device_layers = kv_device_layers_fit(c, model_.tp.size, p.rows, p.capacity, p.layers,
                                             std::max(prefill_piece(longest_prompt), p.rows),
                                             info.free + (stats.reserved - stats.allocated), options_.kv_dtype);
    }
  }
  const std::uint64_t per_layer =
      model::KvCache::bytes_needed(c, p.rows, p.capacity, model_.tp.size, 1, options_.kv_dtype);
  const std::int64_t spilled = p.layers - p.device_layers;
  p.kv_cache_bytes = per_layer * static_cast<std::uint64_t>(p.layers);
  p.kv_host_bytes = per_layer * static_cast<std::uint64_t>(spilled);
  p.kv_device_bytes = per_layer * static_cast<std::uint64_t>(p.device_layers + model::KvCache::staging_layers(spilled));
  return p;
}

void Generator::run_batch(std::span<const GenerationRequest> requests, std::int64_t batch_size,
                          const OnFinished& on_finished, const OnText& on_text) {
  run_batch(requests, batch_size, BatchHooks{.on_finished = on_finished, .on_text = on_text});
}

bool Generator::run_batch(std::span<const GenerationRequest> requests, std::int64_t batch_size,
                          const BatchHooks& hooks) {
  const OnFinished& on_finished = hooks.on_finished;
  const OnText& on_text = hooks.on_text;
  ADAPT_REQUIRE(batch_size >= 1, ConfigError, "batch_size = {} must be at least 1", batch_size);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto n_prompt = static_cast<std::int64_t>(requests[i].prompt.size());
    ADAPT_REQUIRE(n_prompt > 0, ConfigError, "request {}: the prompt is empty after tokenisation", i);
    ADAPT_REQUIRE(room_after(n_prompt) > 0, ConfigError,
                  "request {}: the prompt has {} tokens but the model's context is {} (max_position_embeddings): "
                  "shorten it",
                  i, n_prompt, model_.config.max_position_embeddings);
    ADAPT_REQUIRE(requests[i].max_new_tokens > 0, ConfigError, "request {}: max_new_tokens = {} must be positive", i,
                  requests[i].max_new_tokens);
    sampling_params_validate(requests[i].sampling, "request " + std::to_string(i));
    ADAPT_REQUIRE(static_cast<std::int64_t>(requests[i].resume.tokens.size()) < n_new_of(requests[i]), ConfigError,
                  "request {}: resumes after {} generated tokens, but it may generate {} at most", i,
                  requests[i].resume.tokens.size(), n_new_of(requests[i]));
  }
  if (requests.empty()) return true;
  const BatchPlan plan = plan_batch(requests, batch_size);
  const std::int64_t V = model_.config.vocab_size;
  // Tokens are drawn from the ids the tokenizer has: a vocab_size padded past the tokenizer's (to a
  // multiple of 64 or 128, common in published checkpoints) has rows no text decodes to.
  const auto n_draw = static_cast<std::size_t>(tokenizer_.n_vocab());
  // The rank's KV heads of the layers it holds, next to the model's weights (host or device), the
  // layers past plan.device_layers in host RAM.
  model::KvCache cache(model_.config, plan.rows, plan.capacity, model_.tp.size, model::model_allocator(model_),
                       {.layers = model::stage_layer_range(model_.config, model_.stage),
                        .device_layers = plan.device_layers,
                        .dtype = options_.kv_dtype});

  std::vector<std::unique_ptr<Sequence>> slots(static_cast<std::size_t>(plan.rows));  // per cache row
  std::vector<std::size_t> index_of(static_cast<std::size_t>(plan.rows));             // request of each row
  std::vector<std::int64_t> busy;  // rows decoding this step, ascending
  busy.reserve(static_cast<std::size_t>(plan.rows));
  Tensor step_ids = Tensor::empty({plan.rows, 1}, DType::I32, host_allocator(), "decode_ids");
  // Every forward's logits land in one buffer (a step's are sampled before the next forward): pinned
  // for a model on a GPU, so they come back by DMA, and never fresh pages to fault in.
  const bool on_device = !model::model_device(model_).host_accessible();
  const Tensor logits_buffer = Tensor::empty(
      {plan.rows, V}, DType::F32, on_device ? backend::pinned_host_allocator() : host_allocator(), "logits_host");
  std::size_t next = 0;

  // Per row, the tokens whose keys and values it holds at positions 0, 1, ...: its sequence's, or after
  // the sequence finished, still those of the last one (clear_row keeps the bytes), for prefix sharing.
  std::vector<std::vector<std::int32_t>> row_tokens(static_cast<std::size_t>(plan.rows));
  std::vector<std::int64_t> cached(static_cast<std::size_t>(plan.rows));  // per row: positions not prefilled
  std::vector<std::int32_t> held;  // a finished row's tokens, for hooks.save_prefix
  // Streams what became final, or hands the finished sequence back and frees its row.
  auto after_step = [&](std::int64_t row, FinishReason reason) {
    Sequence& s = *slots[static_cast<std::size_t>(row)];
    const std::size_t index = index_of[static_cast<std::size_t>(row)];
    if (on_text) {
      const std::string_view piece = s.take_stable_text();
      if (!piece.empty()) on_text(index, piece);
    }
    if (reason == FinishReason::None) {
      const std::int64_t every = options_.progress_every;
      if (hooks.on_progress && every > 0 && s.n_generated() % every == 0) hooks.on_progress(index, s.progress());
      return;
    }
    GenerationOutput out = s.finish();
    out.cached_prompt_tokens =
        std::min(cached[static_cast<std::size_t>(row)], static_cast<std::int64_t>(requests[index].prompt.size()));
    if (hooks.save_prefix) {
      const GenerationRequest& req = requests[index];
      held.assign(req.prompt.begin(), req.prompt.end());
      held.insert(held.end(), out.tokens.begin(), out.tokens.end());
      held.resize(static_cast<std::size_t>(std::min<std::int64_t>(cache.n_past(row), std::ssize(held))));
      hooks.save_prefix(index, cache, row, held);
    }
    slots[static_cast<std::size_t>(row)].reset();
    cache.clear_row(row);
    on_finished(index, std::move(out));
  };

  // A stop request: every sequence in flight goes to on_progress, the rest stays unstarted.
  auto stopped = [&]() {
    if (!hooks.stop || !hooks.stop()) return false;
    for (std::int64_t row = 0; row < plan.rows; ++row) {
      const auto& s = slots[static_cast<std::size_t>(row)];
      if (s && hooks.on_progress) hooks.on_progress(index_of[static_cast<std::size_t>(row)], s->progress());
    }
    return true;
  };

  std::vector<std::int32_t> feed;   // a resumed request's prompt and generated tokens
  std::vector<std::int32_t> drawn;  // a decode step's tokens, by busy row
  for (;;) {
    // Every free row takes the next pending prompt, prefilled alone. A sequence can end on its first
    // token; its row then takes the one after.
    for (std::int64_t row = 0; row < plan.rows; ++row) {
      while (!slots[static_cast<std::size_t>(row)] && next < requests.size()) {
        const GenerationRequest& req = requests[next];
        slots[static_cast<std::size_t>(row)] = std::make_unique<Sequence>(req, n_new_of(req), tokenizer_, eos_);
        index_of[static_cast<std::size_t>(row)] = next++;
        cached[static_cast<std::size_t>(row)] = 0;
        Sequence& seq = *slots[static_cast<std::size_t>(row)];
        // Resumed: the saved tokens are replayed; they may already end the sequence (other stop rules).
        if (const FinishReason r = seq.resume(req.resume); r != FinishReason::None) {
          after_step(row, r);
          continue;
        }
        std::span<const std::int32_t> tokens = req.prompt;
        if (!req.resume.tokens.empty()) {
          feed.assign(req.prompt.begin(), req.prompt.end());
          feed.insert(feed.end(), req.resume.tokens.begin(), req.resume.tokens.end());
          tokens = feed;
        }
        // Prefill in pieces of prefill_chunk tokens (each continues the row's cache); the last piece's
        // logits pick the next token.
        const auto P = static_cast<std::int64_t>(tokens.size());
        std::int64_t loaded = 0;  // positions a stored prefix or another row gave the row
        if (hooks.load_prefix) {
          loaded = hooks.load_prefix(index_of[static_cast<std::size_t>(row)], cache, row, tokens);
          ADAPT_CHECK(loaded >= 0 && loaded < P, "load_prefix gave {} positions of a {}-token prompt", loaded, P);
        }
        if (options_.share_prefixes) {
          // The row holding the longest run of this prompt's first tokens (this row itself on a tie: no
          // copy); at least the last token is prefilled, for its logits. Every rank of a split model
          // holds the same tokens in the same rows, so they all choose alike.
          std::int64_t best = 0, from = row;
          for (std::int64_t r = 0; r < plan.rows; ++r) {
            const std::vector<std::int32_t>& h = row_tokens[static_cast<std::size_t>(r)];
            const auto n = static_cast<std::int64_t>(
                std::mismatch(h.begin(), h.begin() + std::min(std::ssize(h), P - 1), tokens.begin()).first - h.begin());
            if (n > best || (n == best && r == row)) {
              best = n;
              from = r;
            }
          }
          if (best > loaded) {
            if (from != row) cache.copy_prefix(from, row, loaded, best);
            loaded = best;
          }
        }
        if (loaded > 0) cache.advance(loaded, {&row, 1});
        cached[static_cast<std::size_t>(row)] = loaded;
        row_tokens[static_cast<std::size_t>(row)].clear();  // being overwritten from `loaded` on
        const std::int64_t chunk = prefill_piece(P - loaded);
        Tensor logits;
        for (std::int64_t at = loaded; at < P; at += chunk) {
          const std::int64_t n = std::min(chunk, P - at);
          Tensor ids = Tensor::empty({1, n}, DType::I32, host_allocator(), "prompt_ids");
          std::copy(tokens.begin() + at, tokens.begin() + at + n, ids.data<std::int32_t>());
          logits = model::llama_forward(model_, ids, &cache,
                                        {.last_position_only = true,
                                         .cache_rows = {&row, 1},
                                         .hook = hook_,
                                         .pp = pp_,
                                         .logits_out = &logits_buffer},
                                        &workspace_);
        }
        row_tokens[static_cast<std::size_t>(row)].assign(tokens.begin(), tokens.end());
        after_step(row, seq.step({logits.data<float>(), n_draw}));
        if (stopped()) return false;
      }
    }
    busy.clear();
    for (std::int64_t row = 0; row < plan.rows; ++row)
      if (slots[static_cast<std::size_t>(row)]) busy.push_back(row);
    if (busy.empty()) break;  // nothing in flight and nothing pending

    // One decode step: every busy row feeds its last token at its own position.
    const auto B = static_cast<std::int64_t>(busy.size());
    Tensor ids = step_ids.narrow(0, 0, B);
    for (std::int64_t b = 0; b < B; ++b)
      ids.data<std::int32_t>()[b] = slots[static_cast<std::size_t>(busy[static_cast<std::size_t>(b)])]->last_token();
    Tensor logits = model::llama_forward(
        model_, ids, &cache,
        {.last_position_only = true, .cache_rows = busy, .hook = hook_, .pp = pp_, .logits_out = &logits_buffer},
        &workspace_);  // (B, V)
    // Each row draws its token with its own sampler, the rows on as many threads as there are (a draw
    // reads the whole vocabulary: ~1.4 ms at 128K logits with sampling); then, in row order, the tokens
    // go on to the stop rules, the text and the callbacks.
    drawn.resize(static_cast<std::size_t>(B));
    std::exception_ptr failed;
#pragma omp parallel for schedule(dynamic, 1) if (B > 1)
    for (std::int64_t b = 0; b < B; ++b) {
      try {
        const std::span<float> row_logits(logits.data<float>() + b * V, n_draw);
        drawn[static_cast<std::size_t>(b)] =
            slots[static_cast<std::size_t>(busy[static_cast<std::size_t>(b)])]->draw(row_logits);
      } catch (...) {
#pragma omp critical(adapt_generator_draw)
        if (!failed) failed = std::current_exception();
      }
    }
    if (failed) std::rethrow_exception(failed);
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t row = busy[static_cast<std::size_t>(b)];
      row_tokens[static_cast<std::size_t>(row)].push_back(ids.data<std::int32_t>()[b]);
      after_step(row, slots[static_cast<std::size_t>(row)]->accept(drawn[static_cast<std::size_t>(b)]));
    }
    if (stopped()) return false;
  }
  return true;
}

GenerationOutput Generator::run(std::span<const std::int32_t> prompt, const SamplingParams& sampling,
                                const std::vector<std::string>& stop_strings, std::int64_t max_new_tokens,
                                const std::function<void(std::string_view)>& on_text) {
  const GenerationRequest request{.prompt = {prompt.begin(), prompt.end()},
                                  .sampling = sampling,
                                  .stop = stop_strings,
                                  .max_new_tokens = max_new_tokens};
  GenerationOutput out;
  OnText text_cb;
  if (on_text) text_cb = [&](std::size_t, std::string_view t) { on_text(t); };
  run_batch(
      {&request, 1}, /*batch_size=*/1, [&](std::size_t, GenerationOutput&& o) { out = std::move(o); }, text_cb);
  return out;
}

}  // namespace adapt::generate
