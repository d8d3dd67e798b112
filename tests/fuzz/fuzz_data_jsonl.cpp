// Training data files (train/data_document.h): JSON Lines records (text, prompt_completion and chat,
// detected from the first record or forced by data.format; types of every field, mixed formats, blank
// and empty records) and raw source files (NUL bytes), then every document tokenized as training
// does (completion flags, the Llama 3.1 chat layout). The first byte picks data.format: 0 unset (the
// file is named .jsonl), 1 text, 2 prompt_completion, 3 chat, 4 raw, 5 unset with a source file's
// name.
#include "core/file.h"
#include "tests/fuzz/fuzz_target.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer_json.h"
#include "train/data_document.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

/// A byte-level BPE tokenizer with the Llama 3.1 special tokens (so chat records encode), written
/// and loaded once per process.
const tokenizer::Tokenizer& data_tokenizer() {
  static const tokenizer::Tokenizer tok = [] {
    const fs::path dir = fuzz::scratch_file("", "unused").parent_path() / "tokenizer";
    const std::vector<std::string> texts{"int main() { return 0; }\n", "def f(x):\n    return x + 1\n",
                                         "{\"text\": \"prompt completion\"}\n", "the the the cat sat"};
    tokenizer::tokenizer_json_write(dir, tokenizer::bpe_train(texts, {.n_merges = 32, .min_pair_count = 2}));
    return tokenizer::Tokenizer::from_file(dir);
  }();
  return tok;
}

}  // namespace

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  const std::string text = R"({"text": "int add(int a, int b) {\n  return a + b;\n}\n"}
{"text": "", "source": "empty.c"}

{"text": "caf\u00e9 \ud83d\ude80 <|eot_id|>", "lang": "c"}
)";
  const std::string prompt_completion =
      R"({"prompt": "Write a C function that adds.\n", "completion": "int add(int a, int b) { return a + b; }"}
{"prompt": "", "completion": "// no prompt"}
{"prompt": "empty completion", "completion": ""}
)";
  const std::string chat =
      R"({"messages": [{"role": "system", "content": "You write C."}, {"role": "user", "content": "Add two ints."}, {"role": "assistant", "content": "int add(int a, int b) { return a + b; }"}]}
{"messages": []}
{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]}
)";
  const std::string source = "#include <stdio.h>\nint main(void) {\n  printf(\"hi\\n\");\n  return 0;\n}\n";
  return {std::string(1, '\0') + text,
          std::string(1, '\0') + prompt_completion,
          std::string(1, '\0') + chat,
          std::string(1, '\1') + text,
          std::string(1, '\2') + prompt_completion,
          std::string(1, '\3') + chat,
          std::string(1, '\4') + source,
          std::string(1, '\5') + source};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int pick = data[0] % 6;
  std::optional<train::DataFormat> format;
  if (pick >= 1 && pick <= 4) format = static_cast<train::DataFormat>(pick - 1);
  const fs::path p = fuzz::scratch_file(bytes, pick == 5 ? "main.c" : "data.jsonl");
  const train::DataFile file{p, p.filename().string(), /*listed=*/true};
  const tokenizer::Tokenizer& tok = data_tokenizer();
  fuzz::refuse_ok([&] {
    std::vector<tokenizer::TokenId> tokens;
    std::vector<std::uint8_t> flags;
    (void)train::data_file_read(file, format, [&](train::DataDocument&& doc) {
      train::document_tokenize(doc, tok, {}, tokens, flags);
      ADAPT_CHECK(tokens.size() == flags.size(), "{} tokens but {} flags", tokens.size(), flags.size());
    });
  });
  return 0;
}
