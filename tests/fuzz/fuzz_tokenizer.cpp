// Tokenizer files (tokenizer/): HF tokenizer.json (model, merges in both forms, added tokens,
// pre-tokenizer and decoder sections) and tiktoken rank files ("base64 rank" lines), told apart by
// a leading '{' as Tokenizer::from_file does; a file that loads then encodes and decodes text with
// and without special tokens.
#include "tests/fuzz/fuzz_target.h"
#include "tests/support/test_support.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"

using namespace adapt;
namespace fs = std::filesystem;

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  const std::vector<std::string> texts{"int main() { return 0; }\n", "def f(x):\n    return x + 1\n",
                                       "for (int i = 0; i < n; ++i) sum += v[i];\n", "the the the cat sat"};
  const std::vector<tokenizer::BpeMerge> merges = tokenizer::bpe_train(texts, {.n_merges = 24, .min_pair_count = 2});
  std::string ranks;  // byte tokens, then each merge's bytes, as a tiktoken rank file
  for (int b = 0; b < 256; ++b)
    ranks += test::base64(std::string(1, static_cast<char>(b))) + " " + std::to_string(b) + "\n";
  for (std::size_t m = 0; m < merges.size(); ++m)
    ranks += test::base64(merges[m].first + merges[m].second) + " " + std::to_string(256 + m) + "\n";
  return {tokenizer::tokenizer_json_text(merges), ranks};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path p = fuzz::scratch_file({reinterpret_cast<const char*>(data), size}, "tokenizer");
  fuzz::refuse_ok([&] {
    const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(p);
    const std::string text = "int main() {\n\treturn 0; // h\xc3\xa9llo \xf0\x9f\x9a\x80 <|eot_id|>\n}";
    for (const bool special : {false, true}) {
      const auto ids = tok.encode(text, {.bos = true, .allow_special = special});
      (void)tok.decode(ids);
    }
  });
  return 0;
}
