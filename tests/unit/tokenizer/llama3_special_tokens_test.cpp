// Llama 3.1 special tokens (SPEC-llama §4.2, HF 3.1 column): names, order and count.
#include <doctest/doctest.h>

#include <set>

#include "tokenizer/llama3_special_tokens.h"

using namespace adapt::tokenizer;

TEST_CASE("the 256 Llama 3.1 special tokens in id order") {
  const std::vector<std::string> t = llama3_special_tokens();
  REQUIRE(t.size() == 256);
  CHECK(std::set<std::string>(t.begin(), t.end()).size() == 256);
  CHECK(t[0] == "<|begin_of_text|>");
  CHECK(t[1] == "<|end_of_text|>");
  CHECK(t[2] == "<|reserved_special_token_0|>");
  CHECK(t[3] == "<|reserved_special_token_1|>");
  CHECK(t[4] == "<|finetune_right_pad_id|>");
  CHECK(t[5] == "<|reserved_special_token_2|>");
  CHECK(t[6] == "<|start_header_id|>");
  CHECK(t[7] == "<|end_header_id|>");
  CHECK(t[8] == "<|eom_id|>");
  CHECK(t[9] == "<|eot_id|>");
  CHECK(t[10] == "<|python_tag|>");
  CHECK(t[11] == "<|reserved_special_token_3|>");
  CHECK(t[12] == "<|reserved_special_token_4|>");
  CHECK(t[255] == "<|reserved_special_token_247|>");
}

TEST_CASE("special token ids at Meta's base 128000") {
  const std::vector<std::string> t = llama3_special_tokens();
  const std::int64_t base = kLlama3SpecialBase;
  CHECK(llama3_special_id(base, Llama3Special::BeginOfText) == 128000);
  CHECK(llama3_special_id(base, Llama3Special::EndOfText) == 128001);
  CHECK(llama3_special_id(base, Llama3Special::FinetuneRightPad) == 128004);
  CHECK(llama3_special_id(base, Llama3Special::StartHeader) == 128006);
  CHECK(llama3_special_id(base, Llama3Special::EndHeader) == 128007);
  CHECK(llama3_special_id(base, Llama3Special::EomId) == 128008);
  CHECK(llama3_special_id(base, Llama3Special::EotId) == 128009);
  CHECK(llama3_special_id(base, Llama3Special::PythonTag) == 128010);
  CHECK(t[static_cast<std::size_t>(llama3_special_id(base, Llama3Special::EotId) - base)] == "<|eot_id|>");
  CHECK(t[static_cast<std::size_t>(llama3_special_id(base, Llama3Special::FinetuneRightPad) - base)] ==
        "<|finetune_right_pad_id|>");
  CHECK(base + kLlama3NumSpecialTokens == 128256);
}
