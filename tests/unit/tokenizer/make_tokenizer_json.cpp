// Test helper: trains byte-level BPE on a corpus folder and writes an HF tokenizer folder, then prints
// the expected sizes and ids as one JSON line for scripts/check_tokenizer_json.py.
// Usage: make_tokenizer_json <corpus_dir> <out_dir> <n_merges>
#include <fmt/format.h>

#include <cstdlib>
#include <string>

#include "core/error.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer_json.h"

int main(int argc, char** argv) {
  using namespace adapt::tokenizer;
  if (argc != 4) {
    fmt::print(stderr, "usage: {} <corpus_dir> <out_dir> <n_merges>\n", argv[0]);
    return static_cast<int>(adapt::ExitCode::Usage);
  }
  try {
    const std::vector<std::string> texts = adapt::tokenizer::bpe_corpus_read(argv[1]);
    const int n_merges = std::atoi(argv[3]);
    const std::vector<BpeMerge> merges = bpe_train(texts, BpeTrainOptions{.n_merges = n_merges});
    const TokenizerJsonSummary s = tokenizer_json_write(argv[2], merges);
    fmt::print(
        "{{\"n_merges\": {}, \"n_bpe_tokens\": {}, \"vocab_size\": {}, \"bos_id\": {}, \"end_of_text_id\": {}, "
        "\"eot_id\": {}, \"eom_id\": {}}}\n",
        merges.size(), s.n_bpe_tokens, s.vocab_size, s.bos_id, s.end_of_text_id, s.eot_id, s.eom_id);
    return 0;
  } catch (const adapt::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return static_cast<int>(e.exit_code());
  }
}
