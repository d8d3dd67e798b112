// tokenizer.json writer: structure of the written files against SPEC-llama §4.1 field by field, ids of
// the special tokens, and errors. The HF `tokenizers` load itself is checked by
// scripts/check_tokenizer_json.py (cpu.tokenizer_hf_check).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "tests/support/test_support.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_file_info.h"
#include "tokenizer/tokenizer_json.h"

using namespace adapt;
using namespace adapt::tokenizer;
using Json = nlohmann::json;

TEST_CASE("tokenizer_json_summary counts 256 bytes + merges + 256 specials") {
  TokenizerJsonSummary s = tokenizer_json_summary(1000);
  CHECK(s.n_bpe_tokens == 1256);
  CHECK(s.vocab_size == 1512);
  CHECK(s.bos_id == 1256);
  CHECK(s.end_of_text_id == 1257);
  CHECK(s.eom_id == 1264);
  CHECK(s.eot_id == 1265);
}

TEST_CASE("tokenizer_json_write writes an HF Llama 3 byte-level tokenizer folder") {
  const std::vector<std::string> texts = tokenizer::bpe_corpus_read(adapt::test::source_dir() / "inputs" / "corpus");
  const std::vector<BpeMerge> merges = bpe_train(texts, BpeTrainOptions{.n_merges = 512});
  REQUIRE(merges.size() == 512);
  adapt::test::TempDir dir("adapt-tokenizer");
  const fs::path out = dir / "tok";
  const TokenizerJsonSummary s = tokenizer_json_write(out, merges);
  CHECK(s.vocab_size == 256 + 512 + 256);

  const Json j = Json::parse(file_read_text(out / "tokenizer.json"));
  CHECK(j["version"] == "1.0");
  CHECK(j["truncation"].is_null());
  CHECK(j["padding"].is_null());
  CHECK(j["normalizer"].is_null());

  const Json& added = j["added_tokens"];
  REQUIRE(added.size() == 256);
  CHECK(added[0]["id"] == s.bos_id);
  CHECK(added[0]["content"] == "<|begin_of_text|>");
  CHECK(added[9]["id"] == s.eot_id);
  CHECK(added[9]["content"] == "<|eot_id|>");
  CHECK(added[255]["content"] == "<|reserved_special_token_247|>");
  for (const Json& t : added) {
    CHECK(t["special"] == true);
    CHECK(t["normalized"] == false);
    CHECK(t["lstrip"] == false);
    CHECK(t["rstrip"] == false);
    CHECK(t["single_word"] == false);
  }

  const Json& pre = j["pre_tokenizer"];
  CHECK(pre["type"] == "Sequence");
  CHECK(pre["pretokenizers"][0]["type"] == "Split");
  CHECK(pre["pretokenizers"][0]["pattern"]["Regex"] == std::string(kLlama3SplitPattern));
  CHECK(pre["pretokenizers"][0]["behavior"] == "Isolated");
  CHECK(pre["pretokenizers"][0]["invert"] == false);
  CHECK(pre["pretokenizers"][1] ==
        Json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});

  const Json& post = j["post_processor"];
  CHECK(post["type"] == "Sequence");
  CHECK(post["processors"][0]["type"] == "ByteLevel");
  const Json& tp = post["processors"][1];
  CHECK(tp["type"] == "TemplateProcessing");
  CHECK(tp["single"].size() == 2);
  CHECK(tp["single"][0]["SpecialToken"]["id"] == "<|begin_of_text|>");
  CHECK(tp["single"][1]["Sequence"]["id"] == "A");
  CHECK(tp["pair"].size() == 4);
  CHECK(tp["pair"][3]["Sequence"]["id"] == "B");
  CHECK(tp["special_tokens"]["<|begin_of_text|>"]["ids"] == Json::array({s.bos_id}));
  CHECK(j["decoder"]["type"] == "ByteLevel");

  const Json& model = j["model"];
  CHECK(model["type"] == "BPE");
  CHECK(model["dropout"].is_null());
  CHECK(model["unk_token"].is_null());
  CHECK(model["continuing_subword_prefix"].is_null());
  CHECK(model["end_of_word_suffix"].is_null());
  CHECK(model["fuse_unk"] == false);
  CHECK(model["byte_fallback"] == false);
  CHECK(model["ignore_merges"] == true);
  const Json& vocab = model["vocab"];
  CHECK(vocab.size() == static_cast<std::size_t>(s.n_bpe_tokens));
  CHECK(vocab["\xC4\xA0"] == 32);  // "Ġ" = byte 0x20
  CHECK(vocab["\xC4\x8A"] == 10);  // "Ċ" = byte 0x0A
  CHECK(vocab["A"] == 65);
  const Json& merges_json = model["merges"];
  REQUIRE(merges_json.size() == merges.size());
  for (std::size_t k = 0; k < merges.size(); ++k) {
    const std::string l = byte_level_encode(merges[k].first), r = byte_level_encode(merges[k].second);
    CHECK(merges_json[k] == l + " " + r);
    CHECK(vocab[l + r] == 256 + static_cast<std::int64_t>(k));
  }

  const Json config = Json::parse(file_read_text(out / "tokenizer_config.json"));
  CHECK(config["bos_token"] == "<|begin_of_text|>");
  CHECK(config["eos_token"] == "<|end_of_text|>");
  CHECK(config["clean_up_tokenization_spaces"] == false);
  CHECK(config["tokenizer_class"] == "PreTrainedTokenizerFast");
  CHECK(config["model_max_length"] == 131072);
  CHECK(config["added_tokens_decoder"][std::to_string(s.eot_id)]["content"] == "<|eot_id|>");
  const std::string chat = config["chat_template"];
  CHECK(chat.find("<|start_header_id|>") != std::string::npos);
  CHECK(chat.find("Cutting Knowledge Date: December 2023") != std::string::npos);
  CHECK(chat.find("add_generation_prompt") != std::string::npos);

  const Json special_map = Json::parse(file_read_text(out / "special_tokens_map.json"));
  CHECK(special_map["bos_token"]["content"] == "<|begin_of_text|>");
  CHECK(special_map["eos_token"]["content"] == "<|end_of_text|>");

  const TokenizerFileInfo info = tokenizer_file_info(out / "tokenizer.json");
  CHECK(info.kind == "hf-json");
  CHECK(info.vocab_size == s.vocab_size);
  CHECK(info.bos_id == s.bos_id);
  CHECK(info.eos_ids == std::vector<std::int64_t>{s.end_of_text_id, s.eom_id, s.eot_id});
}

TEST_CASE("tokenizer_json_write is deterministic and honours options") {
  const std::vector<BpeMerge> merges = bpe_train({"the cat sat on the mat; the end"}, BpeTrainOptions{.n_merges = 8});
  adapt::test::TempDir dir("adapt-tokenizer");
  tokenizer_json_write(dir / "a", merges, TokenizerJsonOptions{.model_max_length = 8192, .eos_token = "<|eot_id|>"});
  tokenizer_json_write(dir / "b", merges, TokenizerJsonOptions{.model_max_length = 8192, .eos_token = "<|eot_id|>"});
  CHECK(file_read_text(dir / "a" / "tokenizer.json") == file_read_text(dir / "b" / "tokenizer.json"));
  const Json config = Json::parse(file_read_text(dir / "a" / "tokenizer_config.json"));
  CHECK(config["eos_token"] == "<|eot_id|>");
  CHECK(config["model_max_length"] == 8192);
}

TEST_CASE("tokenizer_json_write errors") {
  adapt::test::TempDir dir("adapt-tokenizer");
  // A merge whose left part is not yet a token.
  CHECK_THROWS_AS(tokenizer_json_text({{"ab", "c"}}), InternalError);
  // A merge that re-creates an existing token.
  CHECK_THROWS_AS(tokenizer_json_text({{"a", "b"}, {"a", "b"}}), InternalError);
  CHECK_THROWS_WITH_AS(tokenizer_json_write(dir / "x", {}, TokenizerJsonOptions{.eos_token = "</s>"}),
                       doctest::Contains("'</s>' is not a Llama 3.1 special token"), ConfigError);
  // The output folder cannot be created below a regular file.
  adapt::test::write_bytes(dir / "file", "x");
  CHECK_THROWS_WITH_AS(tokenizer_json_write(dir / "file" / "sub", {}), doctest::Contains("file/sub"), IoError);
}
