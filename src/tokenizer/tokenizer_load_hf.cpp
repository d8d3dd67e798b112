// Loads an HF tokenizer.json: a BPE model in one of the two Llama layouts (SPEC-llama §4.1 byte level,
// §4.6 SentencePiece style). Every field that would change ids is either implemented or rejected with
// an UnsupportedError naming it; nothing is silently ignored.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/tokenizer_json.h"

namespace adapt::tokenizer {

namespace {

using Json = nlohmann::json;
constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // ▁

struct Loader {
  const std::string& source;

  [[noreturn]] void malformed(const std::string& what) const {
    ADAPT_THROW(IoError, "tokenizer file '{}': {}", source, what);
  }
  [[noreturn]] void unsupported(const std::string& what) const {
    ADAPT_THROW(UnsupportedError,
                "tokenizer file '{}': {}. adapt reads the two Llama layouts: byte-level BPE with the Llama 3 split "
                "regex (Llama 3) and SentencePiece-style BPE with Metaspace or Prepend+Replace (Llama 2 / CodeLlama)",
                source, what);
  }
  const Json& member(const Json& obj, const char* key, const char* where) const {
    auto it = obj.find(key);
    if (it == obj.end()) malformed(fmt::format("{} has no \"{}\"", where, key));
    return *it;
  }
  std::string string_of(const Json& v, const std::string& where) const {
    if (!v.is_string()) malformed(fmt::format("{} is {}, expected a string", where, v.dump()));
    return v.get<std::string>();
  }
  bool bool_or(const Json& obj, const char* key, bool fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) malformed(fmt::format("\"{}\" is {}, expected true or false", key, it->dump()));
    return it->get<bool>();
  }
  static std::string type_of(const Json& v) {
    auto it = v.find("type");
    return it != v.end() && it->is_string() ? it->get<std::string>() : std::string("?");
  }
};

// pre_tokenizer: Sequence[Split(Llama 3 regex, Isolated), ByteLevel(no prefix space, no regex)] → byte
// level; Metaspace → SentencePiece input rules; null → SentencePiece (the normalizer does the work).
bool read_pre_tokenizer(const Loader& L, const Json& pre, SentencePieceInput& sp) {
  if (pre.is_null()) return false;
  const std::string type = Loader::type_of(pre);
  if (type == "Metaspace") {
    if (L.string_of(L.member(pre, "replacement", "Metaspace"), "Metaspace.replacement") != kMetaspace)
      L.unsupported("a Metaspace replacement other than \"▁\"");
    std::string scheme = "always";
    if (auto it = pre.find("prepend_scheme"); it != pre.end() && !it->is_null()) {
      scheme = L.string_of(*it, "Metaspace.prepend_scheme");
    } else if (pre.contains("add_prefix_space")) {
      scheme = L.bool_or(pre, "add_prefix_space", true) ? "always" : "never";
    }
    using Prepend = SentencePieceInput::Prepend;
    if (scheme == "always") {
      sp.prepend = Prepend::IfMissing;
    } else if (scheme == "first") {
      sp.prepend = Prepend::FirstIfMissing;
    } else if (scheme == "never") {
      sp.prepend = Prepend::Never;
    } else {
      L.malformed(fmt::format("Metaspace.prepend_scheme is \"{}\", expected always, first or never", scheme));
    }
    sp.replace_spaces = true;
    sp.split = L.bool_or(pre, "split", true);
    return false;
  }
  if (type != "Sequence") L.unsupported(fmt::format("pre_tokenizer type \"{}\"", type));
  const Json& list = L.member(pre, "pretokenizers", "pre_tokenizer");
  if (!list.is_array() || list.size() != 2 || Loader::type_of(list[0]) != "Split" ||
      Loader::type_of(list[1]) != "ByteLevel")
    L.unsupported(fmt::format("pre_tokenizer {} (expected Sequence[Split, ByteLevel])", pre.dump().substr(0, 200)));
  const Json& split = list[0];
  const Json& pattern = L.member(split, "pattern", "Split");
  if (!pattern.is_object() || !pattern.contains("Regex") ||
      L.string_of(pattern["Regex"], "Split.pattern.Regex") != kLlama3SplitPattern)
    L.unsupported(fmt::format("Split pattern {} (only the Llama 3 regex {} is implemented)", pattern.dump(),
                              kLlama3SplitPattern));
  if (L.string_of(L.member(split, "behavior", "Split"), "Split.behavior") != "Isolated" ||
      L.bool_or(split, "invert", false))
    L.unsupported("a Split pre-tokenizer that is not behavior Isolated, invert false");
  if (L.bool_or(list[1], "add_prefix_space", false) || L.bool_or(list[1], "use_regex", false))
    L.unsupported("a ByteLevel pre-tokenizer with add_prefix_space or use_regex (GPT-2 style)");
  return true;
}

// normalizer: null, Prepend("▁"), Replace(" " → "▁"), or a Sequence of those (SentencePiece only).
void read_normalizer(const Loader& L, const Json& norm, bool byte_level, SentencePieceInput& sp) {
  if (norm.is_null()) return;
  if (byte_level) L.unsupported(fmt::format("a normalizer ({}) with a byte-level model", Loader::type_of(norm)));
  const std::string type = Loader::type_of(norm);
  if (type == "Sequence") {
    for (const Json& n : L.member(norm, "normalizers", "normalizer")) read_normalizer(L, n, byte_level, sp);
  } else if (type == "Prepend") {
    if (L.string_of(L.member(norm, "prepend", "Prepend"), "Prepend.prepend") != kMetaspace)
      L.unsupported("a Prepend normalizer other than \"▁\"");
    sp.prepend = SentencePieceInput::Prepend::Always;
  } else if (type == "Replace") {
    const Json& pattern = L.member(norm, "pattern", "Replace");
    if (!pattern.is_object() || !pattern.contains("String") || pattern["String"] != " " ||
        L.string_of(L.member(norm, "content", "Replace"), "Replace.content") != kMetaspace)
      L.unsupported(fmt::format("normalizer Replace {} (only \" \" → \"▁\")", norm.dump()));
    sp.replace_spaces = true;
  } else {
    L.unsupported(fmt::format("normalizer type \"{}\"", type));
  }
}

void read_decoder(const Loader& L, const Json& dec, std::vector<DecoderStep>& steps) {
  using T = DecoderStep::Type;
  if (dec.is_null()) L.unsupported("no decoder (HF would join token strings with spaces)");
  const std::string type = Loader::type_of(dec);
  if (type == "Sequence") {
    for (const Json& d : L.member(dec, "decoders", "decoder")) read_decoder(L, d, steps);
  } else if (type == "ByteLevel") {
    steps.push_back({.type = T::ByteLevel});
  } else if (type == "ByteFallback") {
    steps.push_back({.type = T::ByteFallback});
  } else if (type == "Fuse") {
    steps.push_back({.type = T::Fuse});
  } else if (type == "Replace") {
    const Json& pattern = L.member(dec, "pattern", "decoder Replace");
    if (!pattern.is_object() || !pattern.contains("String"))
      L.unsupported(fmt::format("decoder Replace with pattern {} (only String patterns)", pattern.dump()));
    steps.push_back({.type = T::Replace,
                     .pattern = L.string_of(pattern["String"], "Replace.pattern.String"),
                     .content = L.string_of(L.member(dec, "content", "decoder Replace"), "Replace.content")});
  } else if (type == "Strip") {
    const Json& start = L.member(dec, "start", "decoder Strip");
    const Json& stop = L.member(dec, "stop", "decoder Strip");
    if (!start.is_number_unsigned() || !stop.is_number_unsigned())
      L.malformed("decoder Strip needs non-negative integers start and stop");
    steps.push_back({.type = T::Strip,
                     .content = L.string_of(L.member(dec, "content", "decoder Strip"), "Strip.content"),
                     .start = start.get<int>(),
                     .stop = stop.get<int>()});
  } else if (type == "Metaspace") {
    std::string scheme = "always";
    if (auto it = dec.find("prepend_scheme"); it != dec.end() && !it->is_null()) {
      scheme = L.string_of(*it, "Metaspace.prepend_scheme");
    } else if (dec.contains("add_prefix_space")) {
      scheme = L.bool_or(dec, "add_prefix_space", true) ? "always" : "never";
    }
    steps.push_back({.type = T::Metaspace,
                     .content = L.string_of(L.member(dec, "replacement", "decoder Metaspace"), "Metaspace.replacement"),
                     .prepend = scheme != "never"});
  } else {
    L.unsupported(fmt::format("decoder type \"{}\"", type));
  }
}

// Vocabulary strings → token bytes: the byte-level alphabet is undone (strings outside it are kept
// as their UTF-8, as HF's ByteLevel decoder does); SentencePiece strings are the token bytes.
std::string token_bytes_of(const std::string& s, bool byte_level) {
  if (!byte_level) return s;
  auto raw = byte_level_decode(s);
  return raw ? *raw : s;
}

// The BOS id a TemplateProcessing post-processor puts first in "single", if any.
TokenId bos_from_post_processor(const Json& post) {
  if (post.is_null() || !post.is_object()) return kNoToken;
  if (Loader::type_of(post) == "Sequence") {
    for (const Json& p : post.value("processors", Json::array()))
      if (TokenId id = bos_from_post_processor(p); id != kNoToken) return id;
    return kNoToken;
  }
  if (Loader::type_of(post) != "TemplateProcessing") return kNoToken;
  const Json single = post.value("single", Json::array());
  if (!single.is_array() || single.empty() || !single[0].contains("SpecialToken")) return kNoToken;
  const Json name = single[0]["SpecialToken"].value("id", Json());
  const Json tokens = post.value("special_tokens", Json::object());
  if (!name.is_string() || !tokens.contains(name.get<std::string>())) return kNoToken;
  const Json ids = tokens[name.get<std::string>()].value("ids", Json::array());
  return ids.is_array() && ids.size() == 1 && ids[0].is_number_integer() ? ids[0].get<TokenId>() : kNoToken;
}

}  // namespace

Tokenizer Tokenizer::from_hf_json(std::string_view json_text, const std::string& source) {
  const Loader L{source};
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::exception& e) {
    L.malformed(fmt::format("not valid JSON: {}", e.what()));
  }
  if (!root.is_object()) L.malformed(fmt::format("the JSON top level is a {}, expected an object", root.type_name()));
  if (root.contains("truncation") && !root["truncation"].is_null())
    L.unsupported("\"truncation\" is set (it would cut ids); set it to null");
  const Json& model = L.member(root, "model", "the file");
  if (!model.is_object()) L.malformed("\"model\" is not an object");
  if (auto t = model.find("type"); t != model.end() && *t != "BPE")
    L.unsupported(fmt::format("model type {} (only BPE)", t->dump()));
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0.0) L.unsupported("BPE dropout");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model[key].is_null() && model[key] != "") L.unsupported(fmt::format("BPE \"{}\"", key));

  auto impl = std::make_shared<Impl>();
  const bool byte_level = read_pre_tokenizer(L, root.value("pre_tokenizer", Json()), impl->sp_input);
  read_normalizer(L, root.value("normalizer", Json()), byte_level, impl->sp_input);
  read_decoder(L, root.value("decoder", Json()), impl->decoder);
  impl->kind = byte_level ? TokenizerKind::ByteLevel : TokenizerKind::SentencePiece;
  BpeModel& bpe = impl->bpe;
  bpe.options.byte_level = byte_level;
  bpe.options.ignore_merges = L.bool_or(model, "ignore_merges", false);
  bpe.options.byte_fallback = L.bool_or(model, "byte_fallback", false);
  bpe.options.fuse_unk = L.bool_or(model, "fuse_unk", false);

  const Json& vocab = L.member(model, "vocab", "model");
  if (!vocab.is_object()) L.malformed("model.vocab is not an object");
  const Json added = root.value("added_tokens", Json::array());
  if (!added.is_array()) L.malformed("\"added_tokens\" is not an array");
  // Ids number the tokens of the vocabulary and the added tokens from 0 (tables are sized by them).
  const std::int64_t id_end = static_cast<std::int64_t>(vocab.size() + added.size());
  for (const auto& [text, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= id_end)
      L.malformed(
          fmt::format("model.vocab[\"{}\"] is {}, expected an id in [0, {}) (the vocabulary's and the added "
                      "tokens' count)",
                      text, id.dump(), id_end));
    if (text.empty()) L.malformed(fmt::format("model.vocab has an empty token (id {})", id.dump()));
    if (!bpe.vocab.insert(id.get<TokenId>(), token_bytes_of(text, byte_level)))
      L.malformed(fmt::format("model.vocab[\"{}\"] = {}: the id or the token's bytes appear twice", text, id.dump()));
  }
  auto vocab_id = [&](const std::string& text, std::size_t merge_index) {
    const TokenId id = bpe.vocab.find(token_bytes_of(text, byte_level));
    if (id == kNoToken) L.malformed(fmt::format("model.merges[{}]: \"{}\" is not in model.vocab", merge_index, text));
    return id;
  };
  const Json& merges = L.member(model, "merges", "model");
  if (!merges.is_array()) L.malformed("model.merges is not an array");
  for (std::size_t i = 0; i < merges.size(); ++i) {
    std::string a, b;
    const Json& m = merges[i];
    if (m.is_string()) {  // legacy "A B"
      const std::string s = m.get<std::string>();
      if (s.starts_with("#version")) continue;
      const std::size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        L.malformed(fmt::format("model.merges[{}] = \"{}\" is not two tokens separated by one space", i, s));
      a = s.substr(0, space), b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // [["A", "B"]]
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
    } else {
      L.malformed(fmt::format("model.merges[{}] is {}, expected \"A B\" or [\"A\", \"B\"]", i, m.dump()));
    }
    const TokenId left = vocab_id(a, i), right = vocab_id(b, i), merged = vocab_id(a + b, i);
    bpe.merges.insert(left, right, static_cast<std::uint32_t>(i), merged);
  }

  for (int b = 0; b < 256; ++b) {
    if (byte_level) {
      const char c = static_cast<char>(b);
      bpe.byte_ids[b] = bpe.vocab.find(std::string_view(&c, 1));
      if (bpe.byte_ids[b] == kNoToken)
        L.malformed(fmt::format("the byte-level vocabulary has no token for byte 0x{:02X} (all 256 are needed)", b));
    } else if (bpe.options.byte_fallback) {
      bpe.byte_ids[b] = bpe.vocab.find(fmt::format("<0x{:02X}>", b));
    }
  }
  if (auto unk = model.find("unk_token"); unk != model.end() && !unk->is_null()) {
    bpe.options.unk_id = bpe.vocab.find(L.string_of(*unk, "model.unk_token"));
    if (bpe.options.unk_id == kNoToken)
      L.malformed(fmt::format("model.unk_token {} is not in model.vocab", unk->dump()));
  }

  for (std::size_t i = 0; i < added.size(); ++i) {
    const Json& t = added[i];
    const std::string where = fmt::format("added_tokens[{}]", i);
    const Json& id = L.member(t, "id", where.c_str());
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= id_end)
      L.malformed(fmt::format("{}.id is {}, expected an id in [0, {}) (the vocabulary's and the added tokens' count)",
                              where, id.dump(), id_end));
    const std::string content = L.string_of(L.member(t, "content", where.c_str()), where + ".content");
    if (content.empty()) L.malformed(fmt::format("{} has empty content", where));
    for (const char* key : {"lstrip", "rstrip", "single_word"})
      if (L.bool_or(t, key, false)) L.unsupported(fmt::format("{} \"{}\" has {} = true", where, content, key));
    if (L.bool_or(t, "normalized", false) && !root.value("normalizer", Json()).is_null())
      L.unsupported(fmt::format("{} \"{}\" is normalized = true and the file has a normalizer", where, content));
    impl->add_token(id.get<TokenId>(), content, L.bool_or(t, "special", false));
  }
  impl->finish(bos_from_post_processor(root.value("post_processor", Json())));
  impl->description = fmt::format("'{}' (HF tokenizer.json, {}, {} tokens)", source,
                                  byte_level ? "byte-level BPE" : "SentencePiece-style BPE", impl->n_vocab);
  return Tokenizer(std::move(impl));
}

}  // namespace adapt::tokenizer
