// config: binding TOML into a small two-level job struct (every field kind, nested tables, an
// optional table and [[prompts]]), --set overrides, path resolution, byte sizes, to_toml round trips,
// help text, and every error path with its file:line:column and key path.
#include <doctest/doctest.h>

#include <limits>

#include "config/config_binder.h"
#include "config/config_printer.h"
#include "core/error.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::config;

namespace {

enum class Schedule { Constant, Cosine };

struct Optim {
  double lr = 3e-4;
  float beta2 = 0.95f;
  std::optional<int> warmup;
  Schedule schedule = Schedule::Cosine;
  bool operator==(const Optim&) const = default;
};

struct Train {
  int steps = 100;
  std::int64_t seed = 0;
  std::vector<std::int64_t> layers;
  Optim optim;
  bool operator==(const Train&) const = default;
};

struct Model {
  fs::path path;
  DType dtype = DType::BF16;
  std::string attention = "flash";
  std::optional<fs::path> tokenizer;
  bool operator==(const Model&) const = default;
};

struct Lora {
  int rank = 8;
  double alpha = 16;
  bool operator==(const Lora&) const = default;
};

struct Prompt {
  std::string text;
  std::int64_t max_tokens = 16;
  std::vector<std::string> stop;
  bool operator==(const Prompt&) const = default;
};

struct Job {
  std::string name = "run";
  bool dry_run = false;
  std::uint64_t max_memory = 1ull << 30;
  std::optional<std::uint64_t> kv_budget;
  Model model;
  Train train;
  std::optional<Lora> lora;
  std::vector<Prompt> prompts;
  bool operator==(const Job&) const = default;
};

Schema<Job> job_schema() {
  Schema<Optim> optim;
  optim.field("lr", &Optim::lr, "Peak learning rate.").greater_than(0.0);
  optim.field("beta2", &Optim::beta2, "AdamW beta2.").range(0.0f, 1.0f);
  optim.field("warmup", &Optim::warmup, "Warm-up steps.").at_least(0);
  optim.enumeration("schedule", &Optim::schedule, {{"constant", Schedule::Constant}, {"cosine", Schedule::Cosine}},
                    "Learning-rate schedule.");

  Schema<Train> train;
  train.field("steps", &Train::steps, "Optimizer steps.").at_least(1);
  train.field("seed", &Train::seed, "Random seed.");
  train.field("layers", &Train::layers, "Layers to adapt (empty: all).");
  train.table("optim", &Train::optim, optim, "Optimizer settings.");
  train.check([](const Train& t) {
    return t.optim.warmup && *t.optim.warmup > t.steps
               ? fmt::format("optim.warmup = {} exceeds steps = {}; lower optim.warmup", *t.optim.warmup, t.steps)
               : std::string();
  });

  Schema<Model> model;
  model.field("path", &Model::path, "Base model folder.").required();
  model.field("dtype", &Model::dtype, "Weight dtype.");
  model.field("attention", &Model::attention, "Attention kernel.").one_of({"flash", "naive"});
  model.field("tokenizer", &Model::tokenizer, "Tokenizer file (default: inside the model folder).");

  Schema<Lora> lora;
  lora.field("rank", &Lora::rank, "LoRA rank r.")
      .range(1, 256)
      .check([](const int& r) { return (r & (r - 1)) == 0; }, "must be a power of two");
  lora.field("alpha", &Lora::alpha, "LoRA scaling numerator.");

  Schema<Prompt> prompt;
  prompt.field("text", &Prompt::text, "Prompt text.").required();
  prompt.field("max_tokens", &Prompt::max_tokens, "Tokens to generate.").at_least(1);
  prompt.field("stop", &Prompt::stop, "Stop strings.");

  Schema<Job> job;
  job.field("name", &Job::name, "Run name.");
  job.field("dry_run", &Job::dry_run, "Validate and exit.");
  job.byte_size("max_memory", &Job::max_memory, "Host memory budget.");
  job.byte_size("kv_budget", &Job::kv_budget, "KV-cache budget (default: what is left).");
  job.table("model", &Job::model, model, "Base model.");
  job.table("train", &Job::train, train, "Training loop.");
  job.table("lora", &Job::lora, lora, "LoRA adapter (absent: no LoRA).");
  job.table_array("prompts", &Job::prompts, prompt, "Prompts to generate from.");
  return job;
}

const Schema<Job>& schema() {
  static const Schema<Job> s = job_schema();
  return s;
}

Job parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return parse_string(text, "/jobs/job.toml", schema(), overrides);
}

const std::string kMinimal = "[model]\npath = \"/m\"\n";

}  // namespace

TEST_CASE("every field kind binds, with defaults for absent keys") {
  test::TempDir dir;
  test::write_bytes(dir / "job.toml", R"(name = "tiny"
dry_run = true
max_memory = "5GB"
kv_budget = 2048

[model]
path = "weights/llama"
dtype = "float32"
attention = "naive"

[train]
steps = 10
seed = -3
layers = [0, 5]

[train.optim]
lr = 1
beta2 = 0.999
warmup = 4
schedule = "constant"

[lora]
rank = 16

[[prompts]]
text = "hello"
stop = ["\n", "###"]

[[prompts]]
text = "bye"
max_tokens = 3
)");
  Job j = load(dir / "job.toml", schema());
  CHECK(j.name == "tiny");
  CHECK(j.dry_run);
  CHECK(j.max_memory == 5000000000ull);
  CHECK(j.kv_budget == 2048u);
  CHECK(j.model.path == (dir.path() / "weights/llama").lexically_normal());
  CHECK(j.model.path.is_absolute());
  CHECK(j.model.dtype == DType::F32);
  CHECK(j.model.attention == "naive");
  CHECK_FALSE(j.model.tokenizer.has_value());
  CHECK(j.train.steps == 10);
  CHECK(j.train.seed == -3);
  CHECK(j.train.layers == std::vector<std::int64_t>{0, 5});
  CHECK(j.train.optim.lr == 1.0);  // an integer where a float is expected is accepted
  CHECK(j.train.optim.beta2 == 0.999f);
  CHECK(j.train.optim.warmup == 4);
  CHECK(j.train.optim.schedule == Schedule::Constant);
  REQUIRE(j.lora.has_value());
  CHECK(j.lora->rank == 16);
  CHECK(j.lora->alpha == 16.0);
  REQUIRE(j.prompts.size() == 2);
  CHECK(j.prompts[0] == Prompt{"hello", 16, {"\n", "###"}});
  CHECK(j.prompts[1] == Prompt{"bye", 3, {}});

  Job d = parse(kMinimal);
  Job expected;
  expected.model.path = "/m";
  CHECK(d == expected);  // requested config keeps unset optionals unset and absent tables absent
}

TEST_CASE("paths resolve against the TOML file's folder, --set paths against the current directory") {
  Job j = parse("[model]\npath = \"../models/./llama\"\ntokenizer = \"/abs/tok.json\"\n");
  CHECK(j.model.path == fs::path("/models/llama"));
  CHECK(j.model.tokenizer == fs::path("/abs/tok.json"));
  Job o = parse(kMinimal, {"model.path=rel/llama"});
  CHECK(o.model.path == (fs::current_path() / "rel/llama").lexically_normal());
}

TEST_CASE("byte sizes take integers and unit strings") {
  CHECK(parse("kv_budget = \"2GiB\"\n" + kMinimal).kv_budget == 2ull << 30);
  CHECK(parse("max_memory = \"500MB\"\n" + kMinimal).max_memory == 500000000ull);
  CHECK(parse("max_memory = 0\n" + kMinimal).max_memory == 0u);
  CHECK_THROWS_WITH_AS(parse("max_memory = \"5 parsecs\"\n" + kMinimal),
                       doctest::Contains("/jobs/job.toml:1:14: max_memory must be a byte size"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("max_memory = -5\n" + kMinimal),
                       doctest::Contains("job.toml:1:14: max_memory = -5 must be a non-negative byte size"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse("max_memory = 1.5\n" + kMinimal), doctest::Contains("got a float 1.5"), ConfigError);
}

TEST_CASE("to_toml round-trips and comments out unset fields") {
  Job j = parse(kMinimal);
  std::string text = to_toml(j, schema());
  CHECK(text.find("# kv_budget = (unset)") != std::string::npos);
  CHECK(text.find("# [lora] (unset)") != std::string::npos);
  CHECK(text.find("prompts = []") != std::string::npos);
  CHECK(text.find("max_memory = 1073741824  # 1.00 GiB") != std::string::npos);
  CHECK(parse_string(text, "/elsewhere/copy.toml", schema()) == j);

  j.name = "quotes \" and \\ and\nnewline\ttab \x01";
  j.kv_budget = 123;
  j.model.tokenizer = "/t/tok.json";
  j.train.layers = {-1, 0, 7};
  j.train.optim = {0.1, 0.1f, 0, Schedule::Constant};
  j.train.seed = INT64_MIN;
  j.max_memory = UINT64_MAX;  // beyond TOML's signed integers: written as a string
  j.lora = Lora{4, 1e-20};
  j.prompts = {{"a", 1, {"x", "y"}}, {"b", 2, {}}};
  text = to_toml(j, schema());
  CAPTURE(text);
  CHECK(text.find("[[prompts]]") != std::string::npos);
  CHECK(text.find("lr = 0.1\n") != std::string::npos);
  CHECK(parse_string(text, "copy.toml", schema()) == j);
  j.lora->alpha = -std::numeric_limits<double>::infinity();
  j.train.optim.lr = 1e300;
  CHECK(parse_string(to_toml(j, schema()), "copy.toml", schema()) == j);
}

TEST_CASE("--set overrides: TOML values, bare strings, new tables, array elements") {
  std::string file = kMinimal + "[[prompts]]\ntext = \"a\"\n[[prompts]]\ntext = \"b\"\n";
  Job j = parse(file, {"train.optim.lr=1e-4", "name=my run", "train.layers=[1, 2]", "lora.rank=32",
                       "prompts[1].text=changed", "train.optim.schedule=constant", "dry_run = true"});
  CHECK(j.train.optim.lr == 1e-4);
  CHECK(j.name == "my run");
  CHECK(j.train.layers == std::vector<std::int64_t>{1, 2});
  REQUIRE(j.lora.has_value());
  CHECK(j.lora->rank == 32);
  CHECK(j.prompts[1].text == "changed");
  CHECK(j.prompts[0].text == "a");
  CHECK(j.train.optim.schedule == Schedule::Constant);
  CHECK(j.dry_run);
  CHECK(parse(kMinimal, {"name=\"quoted\"", "name=last wins"}).name == "last wins");

  CHECK_THROWS_WITH_AS(parse(kMinimal, {"train.optim.lrr=1"}),
                       doctest::Contains("--set train.optim.lrr=1: unknown key 'train.optim.lrr' (did you mean 'lr'?)"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"trian.steps=1"}),
                       doctest::Contains("unknown key 'trian' (did you mean 'train'?)"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"train.steps=abc"}),
                       doctest::Contains("--set train.steps=abc: train.steps must be an integer, got a string \"abc\""),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"train.steps"}),
                       doctest::Contains("--set train.steps: expected key=value, the key as the job file's dotted path "
                                         "(e.g. --set train.steps=VALUE)"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"model.path.x=1"}),
                       doctest::Contains("model.path is a string (a path), not a table"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(file, {"prompts[2].text=x"}),
                       doctest::Contains("--set prompts[2].text=x: prompts[2] does not exist: the file has 2"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(file, {"prompts.text=x"}),
                       doctest::Contains("prompts is an array of tables; name an element"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(file, {"train[0].steps=1"}), doctest::Contains("drop the [0]"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(file, {"prompts[x].text=1"}), doctest::Contains("cannot read 'prompts[x]'"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"lora.rank=3"}),
                       doctest::Contains("--set lora.rank=3: lora.rank = 3 must be a power"), ConfigError);
}

TEST_CASE("TOML syntax errors give toml++'s description and position") {
  CHECK_THROWS_WITH_AS(parse("[model]\npath = \n"),
                       doctest::Contains("/jobs/job.toml:2:8: TOML syntax error: Error while parsing key-value pair"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse("name = \"a\"\nname = \"b\"\n"), doctest::Contains("job.toml:2:"), ConfigError);
}

TEST_CASE("unknown keys are rejected with a suggestion or the list of valid keys") {
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train.optim]\nlr = 1e-3\nwarmpu = 3\n"),
                       doctest::Contains("job.toml:5:1: unknown key 'train.optim.warmpu' (did you mean 'warmup'?)"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train]\ncompletely_unrelated = 1\n"),
                       doctest::Contains("job.toml:4:1: unknown key 'train.completely_unrelated'; the keys allowed in "
                                         "[train] are: steps, seed, layers, optim"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[[prompts]]\ntext = \"a\"\n[[prompts]]\ntxt = \"b\"\n"),
                       doctest::Contains("job.toml:6:1: unknown key 'prompts[1].txt' (did you mean 'text'?)"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse("[modle]\npath = \"/m\"\n"),
                       doctest::Contains("job.toml:1:2: unknown key 'modle' (did you mean 'model'?)"), ConfigError);
}

TEST_CASE("wrong types name the key path, the expected type and what was found") {
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train.optim]\nlr = \"abc\"\n"),
                       doctest::Contains("job.toml:4:6: train.optim.lr must be a float, got a string \"abc\""),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train]\nsteps = 2.5\n"),
                       doctest::Contains("job.toml:4:9: train.steps must be an integer, got a float 2.5"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train]\nsteps = 3000000000\n"),
                       doctest::Contains("job.toml:4:9: train.steps = 3000000000 does not fit in a 32-bit integer"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse("dry_run = \"yes\"\n" + kMinimal),
                       doctest::Contains("job.toml:1:11: dry_run must be a boolean (true or false), got a string"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train]\nlayers = [1, \"two\"]\n"),
                       doctest::Contains("job.toml:4:14: train.layers[1] must be an integer, got a string \"two\""),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[[prompts]]\ntext = \"a\"\nstop = [\"x\", 3]\n"),
                       doctest::Contains("job.toml:5:14: prompts[0].stop[1] must be a string, got an integer 3"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse("train = 3\n" + kMinimal),
                       doctest::Contains("job.toml:1:9: train must be a table ([train]), got an integer 3"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(
      parse(kMinimal + "[prompts]\ntext = \"a\"\n"),
      doctest::Contains("job.toml:3:1: prompts must be an array of tables ([[prompts]] sections), got a "
                        "table"),
      ConfigError);
  CHECK_THROWS_WITH_AS(parse("prompts = [1]\n" + kMinimal),
                       doctest::Contains("job.toml:1:12: prompts[0] must be a table, got an integer 1"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("[model]\npath = \"/m\"\ndtype = \"float8\"\n"),
                       doctest::Contains("job.toml:3:9: model.dtype: unknown dtype 'float8'"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("[model]\npath = 3\n"),
                       doctest::Contains("job.toml:2:8: model.path must be a string (a path), got an integer 3"),
                       ConfigError);
}

TEST_CASE("constraints: ranges, one-of, enums, custom and whole-struct checks") {
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[lora]\nrank = 0\n"),
                       doctest::Contains("job.toml:4:8: lora.rank = 0 must be in [1, 256]"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[lora]\nrank = 12\n"),
                       doctest::Contains("job.toml:4:8: lora.rank = 12 must be a power of two"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train.optim]\nlr = -1e-3\n"),
                       doctest::Contains("job.toml:4:6: train.optim.lr = -0.001 must be > 0"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train.optim]\nbeta2 = 1.5\n"),
                       doctest::Contains("job.toml:4:9: train.optim.beta2 = 1.5 must be in [0, 1]"), ConfigError);
  CHECK_THROWS_WITH_AS(
      parse(kMinimal + "attention = \"flsh\"\n"),
      doctest::Contains("job.toml:3:13: model.attention = \"flsh\" must be one of \"flash\", \"naive\" "
                        "(did you mean 'flash'?)"),
      ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train.optim]\nschedule = \"cosin\"\n"),
                       doctest::Contains("job.toml:4:12: train.optim.schedule = \"cosin\" must be one of \"constant\", "
                                         "\"cosine\" (did you mean 'cosine'?)"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[train]\nsteps = 5\n[train.optim]\nwarmup = 10\n"),
                       doctest::Contains("job.toml:3:1: [train] optim.warmup = 10 exceeds steps = 5"), ConfigError);
  // A whole-struct check also runs on an absent table, against its defaults and --set values.
  CHECK_THROWS_WITH_AS(parse(kMinimal, {"train.optim.warmup=200"}),
                       doctest::Contains("[train] optim.warmup = 200 exceeds"), ConfigError);
}

TEST_CASE("missing required keys name the table, the key path and the fix") {
  CHECK_THROWS_WITH_AS(parse("name = \"x\"\n"),
                       doctest::Contains("/jobs/job.toml: [model] path is required (model.path: Base model folder). "
                                         "Add it under [model] or pass --set model.path=..."),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse("name = \"x\"\n\n[model]\ndtype = \"bf16\"\n"),
                       doctest::Contains("job.toml:3:1: [model] path is required"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(kMinimal + "[[prompts]]\ntext = \"a\"\n[[prompts]]\nmax_tokens = 2\n"),
                       doctest::Contains("job.toml:5:1: [prompts[1]] text is required (prompts[1].text: Prompt text)"),
                       ConfigError);
  Schema<Prompt> top;
  top.field("text", &Prompt::text, "Prompt text.").required();
  CHECK_THROWS_WITH_AS(parse_string("", "p.toml", top),
                       doctest::Contains("p.toml: text is required (Prompt text). Add it at the top level or pass "
                                         "--set text=..."),
                       ConfigError);
  // A whole-document check names the file alone, even for a value from --set.
  top.check([](const Prompt& p) { return p.text == "no" ? std::string("text must not be \"no\"") : std::string(); });
  CHECK_THROWS_WITH_AS(parse_string("", "p.toml", top, {"text=\"no\""}),
                       doctest::Contains("p.toml: text must not be \"no\""), ConfigError);
  CHECK(parse("", {"model.path=/m"}).model.path == fs::path("/m"));
}

TEST_CASE("load() names a missing file") {
  CHECK_THROWS_WITH_AS(load("/nonexistent/adapt/job.toml", schema()),
                       doctest::Contains("config file '/nonexistent/adapt/job.toml' does not exist"), ConfigError);
}

TEST_CASE("help lists every key path with type, default, constraints and doc") {
  std::string h = help(schema());
  CAPTURE(h);
  CHECK(h.find("name : string = \"run\"\n    Run name.\n") != std::string::npos);
  CHECK(h.find("max_memory : byte size: integer or \"5GB\" = 1073741824") != std::string::npos);
  CHECK(h.find("kv_budget : byte size: integer or \"5GB\" (optional; unset by default)") != std::string::npos);
  CHECK(h.find("[model] : table\n    Base model.\n") != std::string::npos);
  CHECK(h.find("model.path : path, relative to the TOML file (required)") != std::string::npos);
  CHECK(h.find("model.attention : string = \"flash\"; one of \"flash\", \"naive\"") != std::string::npos);
  CHECK(h.find("train.optim.lr : float = 0.0003; must be > 0\n    Peak learning rate.") != std::string::npos);
  CHECK(h.find("train.optim.schedule : \"constant\"|\"cosine\" = \"cosine\"") != std::string::npos);
  CHECK(h.find("lora.rank : integer = 8; must be in [1, 256]; must be a power of two") != std::string::npos);
  CHECK(h.find("[[prompts]] : array of tables") != std::string::npos);
  CHECK(h.find("prompts[].text : string (required)") != std::string::npos);
}

TEST_CASE("schema mistakes are bugs and fail when the schema is built") {
  Schema<Lora> s;
  s.field("rank", &Lora::rank, "r");
  CHECK_THROWS_WITH_AS(s.field("rank", &Lora::rank, "again"), doctest::Contains("registered twice"), InternalError);
  CHECK_THROWS_WITH_AS(s.field("bad key", &Lora::alpha, "x"), doctest::Contains("not a bare TOML key"), InternalError);
  Schema<Model> m;
  CHECK_THROWS_WITH_AS(m.field("tokenizer", &Model::tokenizer, "x").required(), doctest::Contains("std::optional"),
                       InternalError);
}
