#include "generate/generator.h"

#include <algorithm>
#include <memory>

#include "core/error.h"
#include "model/kv_cache.h"
#include "model/llama_device.h"
#include "model/llama_forward.h"

namespace adapt::generate {

Generator::Generator(const model::LlamaModel& model, const tokenizer::Tokenizer& tokenizer)
    : model_(model), tokenizer_(tokenizer), workspace_(model::model_allocator(model)) {
  ADAPT_REQUIRE(tokenizer.n_vocab() <= model.config.vocab_size, ConfigError,
                "the tokenizer ({}) has {} tokens but the model's vocab_size is {}: ids beyond {} have no embedding. "
                "Use the tokenizer that belongs to the model in '{}'.", tokenizer.description(), tokenizer.n_vocab(),
                model.config.vocab_size, model.config.vocab_size - 1, model.dir.string());
}

std::int64_t Generator::room_after(std::int64_t n_prompt) const {
  return std::max<std::int64_t>(0, model_.config.max_position_embeddings - n_prompt);
}

std::int64_t Generator::n_new_of(const GenerationRequest& r) const {
  return std::min(r.max_new_tokens, room_after(static_cast<std::int64_t>(r.prompt.size())));
}

BatchPlan Generator::plan_batch(std::span<const GenerationRequest> requests, std::int64_t batch_size) const {
  BatchPlan p;
  p.rows = std::min<std::int64_t>(batch_size, static_cast<std::int64_t>(requests.size()));
  for (const GenerationRequest& r : requests)
    p.capacity = std::max(p.capacity, static_cast<std::int64_t>(r.prompt.size()) + n_new_of(r));
  if (p.rows > 0 && p.capacity > 0)
    p.kv_cache_bytes = model::KvCache::bytes_needed(model_.config, p.rows, p.capacity, model_.tp.size);
  return p;
}

void Generator::run_batch(std::span<const GenerationRequest> requests, std::int64_t batch_size,
                          const OnFinished& on_finished, const OnText& on_text) {
  ADAPT_REQUIRE(batch_size >= 1, ConfigError, "batch_size = {} must be at least 1", batch_size);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto n_prompt = static_cast<std::int64_t>(requests[i].prompt.size());
    ADAPT_REQUIRE(n_prompt > 0, ConfigError, "request {}: the prompt is empty after tokenisation", i);
    ADAPT_REQUIRE(room_after(n_prompt) > 0, ConfigError,
                  "request {}: the prompt has {} tokens but the model's context is {} (max_position_embeddings): "
                  "shorten it", i, n_prompt, model_.config.max_position_embeddings);
    ADAPT_REQUIRE(requests[i].max_new_tokens > 0, ConfigError, "request {}: max_new_tokens = {} must be positive", i,
                  requests[i].max_new_tokens);
    sampling_params_validate(requests[i].sampling, "request " + std::to_string(i));
  }
  if (requests.empty()) return;
  const BatchPlan plan = plan_batch(requests, batch_size);
  const std::int64_t V = model_.config.vocab_size;
  // The rank's KV heads, next to the model's weights (host or device).
  model::KvCache cache(model_.config, plan.rows, plan.capacity, model_.tp.size, model::model_allocator(model_));

  std::vector<std::unique_ptr<Sequence>> slots(static_cast<std::size_t>(plan.rows));  // per cache row
  std::vector<std::size_t> index_of(static_cast<std::size_t>(plan.rows));             // request of each row
  std::vector<std::int64_t> busy;  // rows decoding this step, ascending
  busy.reserve(static_cast<std::size_t>(plan.rows));
  Tensor step_ids = Tensor::empty({plan.rows, 1}, DType::I32, host_allocator(), "decode_ids");
  std::size_t next = 0;

  // Streams what became final, or hands the finished sequence back and frees its row.
  auto after_step = [&](std::int64_t row, FinishReason reason) {
    Sequence& s = *slots[static_cast<std::size_t>(row)];
    const std::size_t index = index_of[static_cast<std::size_t>(row)];
    if (on_text) {
      const std::string_view piece = s.take_stable_text();
      if (!piece.empty()) on_text(index, piece);
    }
    if (reason == FinishReason::None) return;
    GenerationOutput out = s.finish();
    slots[static_cast<std::size_t>(row)].reset();
    cache.clear_row(row);
    on_finished(index, std::move(out));
  };

  for (;;) {
    // Every free row takes the next pending prompt, prefilled alone. A sequence can end on its first
    // token; its row then takes the one after.
    for (std::int64_t row = 0; row < plan.rows; ++row) {
      while (!slots[static_cast<std::size_t>(row)] && next < requests.size()) {
        const GenerationRequest& req = requests[next];
        slots[static_cast<std::size_t>(row)] = std::make_unique<Sequence>(req, n_new_of(req), tokenizer_);
        index_of[static_cast<std::size_t>(row)] = next++;
        const auto P = static_cast<std::int64_t>(req.prompt.size());
        Tensor ids = Tensor::empty({1, P}, DType::I32, host_allocator(), "prompt_ids");
        std::copy(req.prompt.begin(), req.prompt.end(), ids.data<std::int32_t>());
        Tensor logits = model::llama_forward(
            model_, ids, &cache,
            {.last_position_only = true, .cache_rows = {&row, 1}, .hook = hook_, .pp = pp_}, &workspace_);
        after_step(row,
                   slots[static_cast<std::size_t>(row)]->step({logits.data<float>(), static_cast<std::size_t>(V)}));
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
    Tensor logits = model::llama_forward(model_, ids, &cache,
                                         {.last_position_only = true, .cache_rows = busy, .hook = hook_, .pp = pp_},
                                         &workspace_);  // (B, V)
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t row = busy[static_cast<std::size_t>(b)];
      const std::span<float> row_logits(logits.data<float>() + b * V, static_cast<std::size_t>(V));
      after_step(row, slots[static_cast<std::size_t>(row)]->step(row_logits));
    }
  }
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
  run_batch({&request, 1}, /*batch_size=*/1, [&](std::size_t, GenerationOutput&& o) { out = std::move(o); }, text_cb);
  return out;
}

}  // namespace adapt::generate
