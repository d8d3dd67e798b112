// Conversation files (generate/conversation.h): JSON, the turns' fields and how they tile the token
// ids. A file that loads must write back to a file that loads to the same conversation.
#include <cstdlib>

#include "generate/conversation.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  generate::Conversation c;
  c.name = "kv-store";
  c.tokenizer = "tiny (1024 tokens)";
  c.n_vocab = 1024;
  c.tokens = {1000, 5, 6, 7, 1001, 20, 21, 1002, 8, 9, 30};
  c.turns.push_back({.id = "t1",
                     .kind = "user",
                     .input = "Write it.",
                     .start = 0,
                     .reply_start = 4,
                     .end = 7,
                     .finish_reason = "eos",
                     .reply = "ok\n"});
  c.turns.push_back({.id = "t2",
                     .kind = "text",
                     .input = "more",
                     .start = 7,
                     .reply_start = 10,
                     .end = 10,
                     .finish_reason = "length",
                     .reply = ""});
  c.turns.push_back({.id = "t3",
                     .kind = "continue",
                     .start = 10,
                     .reply_start = 10,
                     .end = 11,
                     .finish_reason = "stop",
                     .reply = "caf\xc3\xa9"});
  return {generate::conversation_to_json(c)};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz::refuse_ok([&] {
    const generate::Conversation c = generate::conversation_from_json(text, "c.json");
    const generate::Conversation back = generate::conversation_from_json(generate::conversation_to_json(c), "again");
    if (back.tokens != c.tokens || back.turns.size() != c.turns.size() || back.name != c.name) {
      std::fprintf(stderr, "a conversation did not survive its own round trip\n");
      std::abort();
    }
  });
  return 0;
}
