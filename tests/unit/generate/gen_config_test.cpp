// Prompt files: the example in inputs/ parses; each kind of bad prompt file is a ConfigError naming
// the file, the key and what to do.
#include <doctest/doctest.h>

#include "config/config_binder.h"
#include "config/gen_config_schema.h"
#include "core/error.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::generate;
namespace fs = std::filesystem;

namespace {
GenJob parse(const std::string& text) { return config::parse_string(text, "/jobs/p.toml", config::gen_job_schema()); }
const std::string kHead = "[model]\npath = \"m\"\n[output]\ndir = \"out\"\n";
}  // namespace

TEST_CASE("inputs/prompts.toml parses and resolves paths against its folder") {
  const fs::path file = test::source_dir() / "inputs/prompts.toml";
  GenJob j = config::load(file, config::gen_job_schema());
  CHECK(j.prompts.size() == 5);
  CHECK(j.prompts[3].conversation == "stack");
  CHECK(j.prompts[4].conversation == "stack");
  CHECK(!j.prompts[4].user);  // continues the reply of prompts[3]
  CHECK(j.model.path == (test::source_dir() / "demo/tiny-model").lexically_normal());
  CHECK(j.prompts[1].temperature == 0.8);
  CHECK(j.prompts[2].text.has_value());
  CHECK(j.defaults.stop.empty());  // replies end at the model's end tokens; a stop string is text
  CHECK(j.runtime.batch_size == 8);
  CHECK_FALSE(j.defaults.output_code);
  CHECK(j.prompts[0].output_code == true);  // stack.hpp gets the reply's code blocks
  CHECK_FALSE(j.prompts[1].output_code.has_value());
  GenJob o = config::load(file, config::gen_job_schema(), {"defaults.max_new_tokens=7", "prompts[0].seed=3"});
  CHECK(o.defaults.max_new_tokens == 7);
  CHECK(o.prompts[0].seed == 3);
}

TEST_CASE("bad prompt files") {
  CHECK(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"hi\"\n").model.path == fs::path("/jobs/m"));
  CHECK_THROWS_WITH_AS(parse(kHead + "[[promts]]\nid = \"a\"\nuser = \"hi\"\n"),
                       doctest::Contains("did you mean 'prompts'"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead), doctest::Contains("no [[prompts]]"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("[output]\ndir = \"o\"\n[[prompts]]\nid = \"a\"\nuser = \"x\"\n"),
                       doctest::Contains("path is required"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\nmax_new_tokens = 0\n"),
                       doctest::Contains("prompts[0].max_new_tokens"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[defaults]\nmax_new_tokens = -5\n[[prompts]]\nid = \"a\"\nuser = \"x\"\n"),
                       doctest::Contains("defaults.max_new_tokens"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\noutput = \"../../etc/x\"\n"),
                       doctest::Contains("stays inside output.dir"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\noutput = \"/tmp/x\"\n"),
                       doctest::Contains("stays inside output.dir"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\ntext = \"y\"\n"),
                       doctest::Contains("give one of user (chat-formatted) or text (raw) for prompt 'a', not both"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\n"),
                       doctest::Contains("give user (chat-formatted) or text"), ConfigError);
  // Conversations: a turn may have neither (it continues the last reply); names are file names;
  // system only on a conversation's first turn in the file; the folder stays inside output.dir.
  CHECK(parse(kHead + "[[prompts]]\nid = \"a\"\nconversation = \"c-1.x\"\n").prompts[0].conversation == "c-1.x");
  CHECK(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\n").output.conversations == "conversations");
  for (const char* bad : {"a/b", ".c", "", "a b"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\nconversation = \"" + bad + "\"\n"),
                         doctest::Contains("must be 1 to 128 letters"), ConfigError);
  }
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\nconversation = \"c\"\nuser = \"x\"\n[[prompts]]\nid = "
                                     "\"b\"\nconversation = \"c\"\nsystem = \"s\"\nuser = \"y\"\n"),
                       doctest::Contains("is not the first turn of conversation 'c'"), ConfigError);
  CHECK(parse(kHead + "[[prompts]]\nid = \"a\"\nconversation = \"c\"\nsystem = \"s\"\nuser = \"x\"\n[[prompts]]\nid = "
                      "\"b\"\nconversation = \"d\"\nsystem = \"s\"\nuser = \"y\"\n")
            .prompts.size() == 2);
  CHECK_THROWS_WITH_AS(parse("[model]\npath = \"m\"\n[output]\ndir = \"out\"\nconversations = \"../c\"\n[[prompts]]\n"
                             "id = \"a\"\nuser = \"x\"\n"),
                       doctest::Contains("output.conversations"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\ntext = \"\"\n"), doctest::Contains("is empty"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\n[[prompts]]\nid = \"a\"\nuser = \"y\"\n"),
                       doctest::Contains("used twice"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\ntop_p = 2.0\n"),
                       doctest::Contains("prompts[0].top_p"), ConfigError);
  CHECK(parse(kHead + "[[prompts]]\nid = \"a\"\nuser = \"x\"\n").runtime.batch_size == 8);  // the default
  CHECK(parse(kHead + "[runtime]\nbatch_size = 3\n[[prompts]]\nid = \"a\"\nuser = \"x\"\n").runtime.batch_size == 3);
  CHECK_THROWS_WITH_AS(parse(kHead + "[runtime]\nbatch_size = 0\n[[prompts]]\nid = \"a\"\nuser = \"x\"\n"),
                       doctest::Contains("runtime.batch_size"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kHead + "[runtime]\nbatch = 4\n[[prompts]]\nid = \"a\"\nuser = \"x\"\n"),
                       doctest::Contains("unknown key 'runtime.batch'"), ConfigError);
}
