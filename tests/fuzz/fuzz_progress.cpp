// Generation progress files (generate/progress.h): JSON with the prompt's id, the request's
// fingerprint, the tokens so far and the sampler's state. A file that loads must write back to a file
// that loads to the same record.
#include <cstdlib>

#include "generate/progress.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  generate::ProgressRecord p{.id = "long", .fingerprint = "082ae11ca5170ee8"};
  p.progress = {.tokens = {5, 6, 7, 1001}, .rng_state = "1 2 3", .time_to_first_token_s = 0.5, .decode_s = 2.25};
  return {generate::progress_to_json(p)};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz::refuse_ok([&] {
    const generate::ProgressRecord p = generate::progress_from_json(text, "p.json");
    const generate::ProgressRecord back = generate::progress_from_json(generate::progress_to_json(p), "again");
    if (back.progress.tokens != p.progress.tokens || back.id != p.id || back.fingerprint != p.fingerprint ||
        back.progress.rng_state != p.progress.rng_state) {
      std::fprintf(stderr, "a progress record did not survive its own round trip\n");
      std::abort();
    }
  });
  return 0;
}
