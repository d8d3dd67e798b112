// tokenizer.json / tokenizer_config.json / special_tokens_map.json writer. Key order follows the files
// HF `tokenizers` saves (nlohmann::ordered_json), so a diff against a hub file is readable.
#include "tokenizer/tokenizer_json.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/llama3_special_tokens.h"

namespace adapt::tokenizer {

namespace {

using Json = nlohmann::ordered_json;

// Llama 3.1 instruct template without tool calling (SPEC-llama §4.5): BOS, an always-present system
// block with the knowledge/date lines, then header + trimmed content + <|eot_id|> per message; a tool
// result's content as the hub template writes it (`| tojson`: a JSON string, not trimmed).
constexpr std::string_view kLlama31ChatTemplate = R"({{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message['role'] == 'ipython' or message['role'] == 'tool' %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- else %}
        {{- "<|start_header_id|>" + message['role'] + "<|end_header_id|>\n\n" }}
        {{- message['content'] | trim + "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- "<|start_header_id|>assistant<|end_header_id|>\n\n" }}
{%- endif %}
)";

Json added_token_json(std::int64_t id, const std::string& content) {
  return Json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
              {"rstrip", false}, {"normalized", false}, {"special", true}};
}

// The body of an added token as tokenizer_config.json's added_tokens_decoder and
// special_tokens_map.json write it (no id, keys sorted as transformers writes them).
Json token_body_json(const std::string& content, bool with_special) {
  Json j{{"content", content}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}};
  if (with_special) j["special"] = true;
  return j;
}

Json byte_level_json(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return Json{{"type", "ByteLevel"},
              {"add_prefix_space", add_prefix_space},
              {"trim_offsets", trim_offsets},
              {"use_regex", use_regex}};
}

Json template_piece(const char* kind, const std::string& id, int type_id) {
  return Json{{kind, Json{{"id", id}, {"type_id", type_id}}}};
}

// model.vocab: inserted through the underlying vector because ordered_json's operator[] searches
// linearly for duplicates (quadratic for large vocabularies); uniqueness is checked by the caller.
Json vocab_json(const std::vector<std::string>& token_bytes) {
  Json vocab = Json::object();
  auto& items = vocab.get_ref<Json::object_t&>();
  using Base = std::vector<std::pair<const std::string, Json>>;
  static_cast<Base&>(items).reserve(token_bytes.size());
  for (std::size_t id = 0; id < token_bytes.size(); ++id)
    static_cast<Base&>(items).emplace_back(byte_level_encode(token_bytes[id]), Json(static_cast<std::int64_t>(id)));
  return vocab;
}

std::string dump(const Json& j) { return j.dump(2, ' ', /*ensure_ascii=*/false) + "\n"; }

}  // namespace

TokenizerJsonSummary tokenizer_json_summary(std::int64_t n_merges) {
  TokenizerJsonSummary s;
  s.n_bpe_tokens = 256 + n_merges;
  s.vocab_size = s.n_bpe_tokens + kLlama3NumSpecialTokens;
  s.bos_id = llama3_special_id(s.n_bpe_tokens, Llama3Special::BeginOfText);
  s.end_of_text_id = llama3_special_id(s.n_bpe_tokens, Llama3Special::EndOfText);
  s.eot_id = llama3_special_id(s.n_bpe_tokens, Llama3Special::EotId);
  s.eom_id = llama3_special_id(s.n_bpe_tokens, Llama3Special::EomId);
  return s;
}

std::string tokenizer_json_text(const std::vector<BpeMerge>& merges) {
  std::vector<std::string> token_bytes;
  std::unordered_map<std::string, std::int64_t> token_ids;
  for (int b = 0; b < 256; ++b) {
    token_bytes.emplace_back(1, static_cast<char>(b));
    token_ids.emplace(token_bytes.back(), b);
  }
  Json merges_json = Json::array();
  for (std::size_t k = 0; k < merges.size(); ++k) {
    const auto& [left, right] = merges[k];
    ADAPT_CHECK(token_ids.count(left) && token_ids.count(right),
                "merge {} uses a token that no earlier merge defines ('{}' + '{}')", k, byte_level_encode(left),
                byte_level_encode(right));
    std::string merged = left + right;
    ADAPT_CHECK(!token_ids.count(merged), "merge {} re-creates the existing token '{}'", k, byte_level_encode(merged));
    merges_json.push_back(byte_level_encode(left) + " " + byte_level_encode(right));
    token_ids.emplace(merged, static_cast<std::int64_t>(token_bytes.size()));
    token_bytes.push_back(std::move(merged));
  }
  const auto n_bpe = static_cast<std::int64_t>(token_bytes.size());
  const std::vector<std::string> specials = llama3_special_tokens();
  const std::string& bos = specials[static_cast<std::size_t>(Llama3Special::BeginOfText)];

  Json added = Json::array();
  for (std::size_t i = 0; i < specials.size(); ++i)
    added.push_back(added_token_json(n_bpe + static_cast<std::int64_t>(i), specials[i]));

  Json pre_tokenizer{{"type", "Sequence"},
                     {"pretokenizers", Json::array({Json{{"type", "Split"},
                                                         {"pattern", Json{{"Regex", std::string(kLlama3SplitPattern)}}},
                                                         {"behavior", "Isolated"},
                                                         {"invert", false}},
                                                    byte_level_json(/*add_prefix_space=*/false, /*trim_offsets=*/true,
                                                                    /*use_regex=*/false)})}};

  Json template_processing{
      {"type", "TemplateProcessing"},
      {"single", Json::array({template_piece("SpecialToken", bos, 0), template_piece("Sequence", "A", 0)})},
      {"pair", Json::array({template_piece("SpecialToken", bos, 0), template_piece("Sequence", "A", 0),
                            template_piece("SpecialToken", bos, 1), template_piece("Sequence", "B", 1)})},
      {"special_tokens",
       Json{{bos, Json{{"id", bos}, {"ids", Json::array({n_bpe})}, {"tokens", Json::array({bos})}}}}}};
  Json post_processor{{"type", "Sequence"},
                      {"processors", Json::array({byte_level_json(/*add_prefix_space=*/true, /*trim_offsets=*/false,
                                                                  /*use_regex=*/true),
                                                  template_processing})}};

  Json model{{"type", "BPE"},
             {"dropout", nullptr},
             {"unk_token", nullptr},
             {"continuing_subword_prefix", nullptr},
             {"end_of_word_suffix", nullptr},
             {"fuse_unk", false},
             {"byte_fallback", false},
             {"ignore_merges", true},
             {"vocab", vocab_json(token_bytes)},
             {"merges", std::move(merges_json)}};

  Json root{{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", std::move(added)},
            {"normalizer", nullptr},
            {"pre_tokenizer", std::move(pre_tokenizer)},
            {"post_processor", std::move(post_processor)},
            {"decoder", byte_level_json(/*add_prefix_space=*/true, /*trim_offsets=*/true, /*use_regex=*/true)},
            {"model", std::move(model)}};
  return dump(root);
}

TokenizerJsonSummary tokenizer_json_write(const fs::path& dir, const std::vector<BpeMerge>& merges,
                                          const TokenizerJsonOptions& options) {
  const std::vector<std::string> specials = llama3_special_tokens();
  ADAPT_REQUIRE(std::find(specials.begin(), specials.end(), options.eos_token) != specials.end(), ConfigError,
                "tokenizer eos_token '{}' is not a Llama 3.1 special token; use '<|end_of_text|>' (base models) "
                "or '<|eot_id|>' (instruct models)",
                options.eos_token);
  const TokenizerJsonSummary summary = tokenizer_json_summary(static_cast<std::int64_t>(merges.size()));
  const std::string json_text = tokenizer_json_text(merges);
  const std::string& bos = specials[static_cast<std::size_t>(Llama3Special::BeginOfText)];

  Json decoder = Json::object();
  for (std::size_t i = 0; i < specials.size(); ++i)
    decoder[std::to_string(summary.n_bpe_tokens + static_cast<std::int64_t>(i))] =
        token_body_json(specials[i], /*with_special=*/true);
  Json config{{"added_tokens_decoder", std::move(decoder)},
              {"bos_token", bos},
              {"chat_template", std::string(kLlama31ChatTemplate)},
              {"clean_up_tokenization_spaces", false},
              {"eos_token", options.eos_token},
              {"model_input_names", Json::array({"input_ids", "attention_mask"})},
              {"model_max_length", options.model_max_length},
              {"tokenizer_class", "PreTrainedTokenizerFast"}};
  Json special_map{{"bos_token", token_body_json(bos, /*with_special=*/false)},
                   {"eos_token", token_body_json(options.eos_token, /*with_special=*/false)}};

  std::error_code ec;
  fs::create_directories(dir, ec);
  ADAPT_REQUIRE(!ec, IoError, "cannot create tokenizer folder '{}': {}", dir.string(), ec.message());
  file_write_atomic(dir / "tokenizer_config.json", dump(config));
  file_write_atomic(dir / "special_tokens_map.json", dump(special_map));
  file_write_atomic(dir / "tokenizer.json", json_text);
  return summary;
}

}  // namespace adapt::tokenizer
