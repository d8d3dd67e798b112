// PromptShard: parsing "I/N", which positions a share holds (disjoint shares covering every position),
// and the results file name of a share.
#include <doctest/doctest.h>

#include <vector>

#include "core/error.h"
#include "generate/prompt_shard.h"

using namespace adapt;
using namespace adapt::generate;

TEST_CASE("prompt shares: parse, disjoint and complete, results names") {
  const PromptShard s = prompt_shard_parse("2/5");
  CHECK(s.index == 2);
  CHECK(s.count == 5);
  for (const char* bad : {"", "5/5", "6/5", "-1/5", "1/0", "1", "/3", "1/", "a/3", "1/3/4", " 1/3", "1/3 "}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(prompt_shard_parse(bad), ConfigError);
  }
  for (std::int64_t n : {1, 2, 3, 7}) {
    std::vector<int> owners(20, 0);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::size_t p = 0; p < owners.size(); ++p) owners[p] += prompt_shard_contains({i, n}, p) ? 1 : 0;
    for (int o : owners) CHECK(o == 1);
  }
  CHECK(prompt_shard_contains({1, 3}, 4));
  CHECK_FALSE(prompt_shard_contains({1, 3}, 5));
  CHECK(prompt_shard_results_name("results.jsonl", {}) == "results.jsonl");
  CHECK(prompt_shard_results_name("results.jsonl", {3, 16}) == "results.shard-3-of-16.jsonl");
  CHECK(prompt_shard_results_name("sub/out.jsonl", {0, 2}) == "sub/out.shard-0-of-2.jsonl");
  CHECK(prompt_shard_results_name("results", {1, 2}) == "results.shard-1-of-2");
}
