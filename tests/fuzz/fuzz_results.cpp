// Results files of generation jobs (generate/results.h, results_parts.h): JSON Lines read to find
// finished prompts, a record cut by a crash dropped, part files of replicas merged.
#include <fmt/format.h>

#include "core/file.h"
#include "generate/results.h"
#include "generate/results_parts.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  const fs::path p = fuzz::scratch_file("", "seed.jsonl");
  {
    generate::ResultsFile f(p);
    for (int i = 0; i < 3; ++i) {
      generate::ResultRecord r;
      r.id = fmt::format("p{}", i);
      r.text = i == 1 ? "int main() {\n  return 0;\n}\n" : "caf\xc3\xa9 \"quoted\"";
      r.prompt_tokens = 10 + i;
      r.completion_tokens = 5;
      r.finish_reason = i == 2 ? "length" : "eos";
      r.time_to_first_token_s = 0.01;
      r.tokens_per_s = 100.5;
      if (i == 0) r.output_file = "src/a.c";
      if (i == 2) r.conversation.assign("kv-store");
      f.append(r);
    }
  }
  return {file_read_text(p)};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const fs::path results = fuzz::scratch_file(bytes, "results.jsonl");
  fuzz::refuse_ok([&] { (void)generate::ResultsFile(results).n_done(); });
  // The same bytes as a replica's part file beside a results file with one record.
  const fs::path merged = fuzz::scratch_file("{\"id\":\"x\"}\n", "merged.jsonl");
  (void)fuzz::scratch_file(bytes, "merged.dp-1-of-2.jsonl");
  fuzz::refuse_ok([&] { (void)generate::results_parts_merge(merged); });
  return 0;
}
