// Stop rules across token boundaries, and the results file: append, resume, a cut-short last line,
// output paths that try to leave the output folder.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "generate/results.h"
#include "generate/stop.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::generate;

TEST_CASE("stop strings match across tokens and are cut from the text") {
  StopChecker s({2}, {"\n```\n"}, 100);
  CHECK(s.push(5, "int main() {}") == FinishReason::None);
  CHECK(s.push(6, "\n``") == FinishReason::None);
  CHECK(s.stable_size() == std::string("int main() {}").size());  // "\n``" may start the stop string
  CHECK(s.push(7, "`\nmore") == FinishReason::StopString);
  CHECK(s.text() == "int main() {}");
}

TEST_CASE("eos and length") {
  StopChecker s({2, 9}, {}, 3);
  CHECK(s.push(5, "a") == FinishReason::None);
  CHECK(s.push(9, "") == FinishReason::Eos);
  StopChecker l({2}, {}, 2);
  CHECK(l.push(5, "a") == FinishReason::None);
  CHECK(l.push(6, "b") == FinishReason::Length);
  CHECK(l.text() == "ab");
  CHECK_THROWS_AS(StopChecker({}, {}, 0), ConfigError);
  CHECK(std::string(finish_reason_name(FinishReason::StopString)) == "stop");
}

TEST_CASE("results are appended, found again on restart, and a cut-short line is dropped") {
  test::TempDir dir;
  const fs::path p = dir / "out/results.jsonl";
  {
    ResultsFile r(p);
    CHECK(r.n_done() == 0);
    r.append({.id = "a", .text = "x\ny \"q\"", .prompt_tokens = 3, .completion_tokens = 2, .finish_reason = "eos"});
    r.append({.id = "b", .text = "\xff", .finish_reason = "length"});
  }
  {
    ResultsFile r(p);
    CHECK(r.done("a"));
    CHECK(r.done("b"));
    CHECK_FALSE(r.done("c"));
  }
  const std::string good = file_read_text(p);
  auto first = nlohmann::json::parse(good.substr(0, good.find('\n')));
  CHECK(first["text"] == "x\ny \"q\"");
  CHECK(first["completion_tokens"] == 2);
  test::write_bytes(p, good + "{\"id\": \"c\", \"te");  // a crash mid-record
  {
    ResultsFile r(p);
    CHECK(r.n_done() == 2);
    CHECK_FALSE(r.done("c"));
    r.append({.id = "c", .finish_reason = "stop"});
  }
  CHECK(file_read_text(p) == good + file_read_text(p).substr(good.size()));
  CHECK(ResultsFile(p).done("c"));
  test::write_bytes(p, "not json\n");
  CHECK_THROWS_WITH_AS(ResultsFile{p}, doctest::Contains("results.jsonl:1"), IoError);
}

TEST_CASE("output paths stay inside the output folder") {
  CHECK(output_path_inside("/o", "src/main.cpp", "p") == fs::path("/o/src/main.cpp"));
  CHECK(output_path_inside("/o", "a/../b.txt", "p") == fs::path("/o/b.txt"));
  CHECK_THROWS_WITH_AS(output_path_inside("/o", "../x", "prompts[1]"), doctest::Contains("prompts[1]"), ConfigError);
  CHECK_THROWS_AS(output_path_inside("/o", "a/../../x", "p"), ConfigError);
  CHECK_THROWS_AS(output_path_inside("/o", "/etc/passwd", "p"), ConfigError);
  CHECK_THROWS_AS(output_path_inside("/o", "", "p"), ConfigError);
}
