// DataConfig validation messages, glob matching and input discovery, and the hashing/permutation
// primitives (XXH64 against vectors from the reference xxhash 3.x Python package).
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "tests/support/test_support.h"
#include "tests/unit/train/data_test_util.h"
#include "train/data_config_check.h"
#include "train/data_glob.h"
#include "train/data_hash.h"

using namespace adapt;
using namespace adapt::train;

namespace {

DataConfig valid_config() {
  DataConfig c;
  c.inputs = {"corpus/"};
  c.globs = {"**/*.py"};
  c.cache_dir = "cache";
  c.seq_len = 2048;
  return c;
}

}  // namespace

TEST_CASE("data_config_validate names the key, the value and the limit") {
  CHECK_NOTHROW(data_config_validate(valid_config(), 8192));
  DataConfig c = valid_config();
  c.seq_len = 9000;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192),
                       doctest::Contains("data.seq_len = 9000 exceeds the model's context of 8192"), ConfigError);
  c.seq_len = 0;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("data.seq_len = 0 must be > 0"), ConfigError);
  c = valid_config();
  c.inputs.clear();
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("data.inputs is empty"), ConfigError);
  c = valid_config();
  c.eval_fraction = 0.1;
  c.eval_documents = 3;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("set only one"), ConfigError);
  c = valid_config();
  c.eval_fraction = 1.0;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("data.eval_fraction = 1 must be in (0, 1)"),
                       ConfigError);
  c.eval_fraction = 0.0;
  CHECK_THROWS_AS(data_config_validate(c, 8192), ConfigError);
  c = valid_config();
  c.eval_documents = 0;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("data.eval_documents = 0 must be >= 1"),
                       ConfigError);
  c = valid_config();
  c.tokenize_threads = 0;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("data.tokenize_threads = 0"), ConfigError);
  c = valid_config();
  c.eval_inputs = {"eval.jsonl"};
  c.eval_documents = 2;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("data.eval_inputs is set"), ConfigError);
  c = valid_config();
  c.cache_dir.clear();
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("data.cache_dir is not set"), ConfigError);
  c = valid_config();
  c.globs = {"src/[a-z.py"};
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192),
                       doctest::Contains("data.globs[0] = \"src/[a-z.py\" has an unclosed"), ConfigError);
  c.globs = {"../x/*.py"};
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("'..'"), ConfigError);
  c.globs = {"/abs/*.py"};
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("is absolute"), ConfigError);
  c = valid_config();
  c.format = DataFormat::Text;
  c.loss_on_completions_only = true;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192),
                       doctest::Contains("data.loss_on_completions_only = true but "
                                         "data.format = \"text\""),
                       ConfigError);
  c = valid_config();
  c.pack = false;
  c.cross_document_attention = true;
  CHECK_THROWS_WITH_AS(data_config_validate(c, 8192), doctest::Contains("data.cross_document_attention"), ConfigError);
}

TEST_CASE("data formats parse by name, with a suggestion for typos") {
  for (const auto& [name, value] : data_format_names()) {
    CHECK(data_format_parse(name) == value);
    CHECK(data_format_name(value) == name);
  }
  CHECK_THROWS_WITH_AS(data_format_parse("chatt"), doctest::Contains("did you mean 'chat'"), ConfigError);
  CHECK_THROWS_WITH_AS(data_format_parse("xml"), doctest::Contains("data.format = \"xml\" is not a known format"),
                       ConfigError);
}

TEST_CASE("glob_match follows pathlib: * stays in a component, ** spans folders") {
  CHECK(glob_match("**/*.py", "a.py"));
  CHECK(glob_match("**/*.py", "x/y/a.py"));
  CHECK_FALSE(glob_match("**/*.py", "x/y/a.pyc"));
  CHECK(glob_match("*.py", "a.py"));
  CHECK_FALSE(glob_match("*.py", "x/a.py"));
  CHECK(glob_match("src/**", "src/a/b.c"));
  CHECK(glob_match("src/**/test_*.cpp", "src/test_a.cpp"));
  CHECK(glob_match("src/**/test_*.cpp", "src/x/y/test_a.cpp"));
  CHECK_FALSE(glob_match("src/**/test_*.cpp", "lib/test_a.cpp"));
  CHECK(glob_match("?.c", "a.c"));
  CHECK_FALSE(glob_match("?.c", "ab.c"));
  CHECK(glob_match("[a-c]*.rs", "b_main.rs"));
  CHECK_FALSE(glob_match("[!a-c]*.rs", "b_main.rs"));
  CHECK(glob_match("file\\*.txt", "file*.txt"));
  CHECK_FALSE(glob_match("file\\*.txt", "fileX.txt"));
  CHECK(glob_match("*a*b*c", "xxaxxbxxbc"));
  CHECK_FALSE(glob_match("*.PY", "a.py"));  // case-sensitive
  CHECK(glob_problem("**/*.py").empty());
  CHECK_FALSE(glob_problem("a**b/*.py").empty());
}

TEST_CASE("data_files_discover walks folders deterministically and reports bad inputs by key") {
  test::TempDir dir;
  test::write_file(dir / "corpus/b.py", "b");
  test::write_file(dir / "corpus/a.py", "a");
  test::write_file(dir / "corpus/sub/c.py", "c");
  test::write_file(dir / "corpus/sub/d.cpp", "d");
  test::write_file(dir / "corpus/sub/e.txt", "e");
  test::write_file(dir / "corpus/.git/f.py", "hidden");
  test::write_file(dir / "corpus/Z.py", "upper case sorts first");
  test::write_file(dir / "corpus/cache/tokens.py", "excluded");
  test::write_file(dir / "one.jsonl", "{}");
  const std::string corpus = (dir / "corpus").string();

  const auto files = data_files_discover({corpus + "/", (dir / "one.jsonl").string()}, {"**/*.py", "**/*.cpp"},
                                         "data.inputs", dir / "corpus/cache");
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(f.path.lexically_relative(dir.path()).generic_string());
  CHECK(names == std::vector<std::string>{"corpus/Z.py", "corpus/a.py", "corpus/b.py", "corpus/sub/c.py",
                                          "corpus/sub/d.cpp", "one.jsonl"});
  CHECK_FALSE(files[0].listed);
  CHECK(files.back().listed);
  CHECK(files[1].name == corpus + "/a.py");

  CHECK_THROWS_WITH_AS(
      data_files_discover({corpus, (dir / "missing.jsonl").string()}, {"**/*.py"}, "data.inputs"),
      doctest::Contains(("data.inputs[1] = '" + (dir / "missing.jsonl").string() + "' does not exist").c_str()),
      IoError);
  CHECK_THROWS_WITH_AS(data_files_discover({corpus}, {}, "data.inputs"),
                       doctest::Contains("is a folder but data.globs is empty"), ConfigError);
  CHECK_THROWS_WITH_AS(data_files_discover({corpus}, {"**/*.go"}, "data.eval_inputs"),
                       doctest::Contains(("data.eval_inputs[0] = '" + corpus + "': no file matches").c_str()), IoError);
  CHECK_THROWS_WITH_AS(data_files_discover({corpus, corpus + "/a.py"}, {"*.py"}, "data.inputs"),
                       doctest::Contains("is reached twice (by data.inputs[0] and by data.inputs[1])"), IoError);
  // A symbolic link to a file already read is read once; one to a folder is not followed.
  fs::create_symlink(fs::path(corpus) / "a.py", fs::path(corpus) / "alias.py");
  fs::create_directory_symlink(fs::path(corpus) / "sub", fs::path(corpus) / "linked");
  const auto linked = data_files_discover({corpus}, {"**/*.py", "**/*.cpp"}, "data.inputs");
  std::vector<std::string> linked_names;
  for (const auto& f : linked) linked_names.push_back(fs::path(f.name).lexically_relative(dir.path()).generic_string());
  CHECK(std::count(linked_names.begin(), linked_names.end(), "corpus/alias.py") +
            std::count(linked_names.begin(), linked_names.end(), "corpus/a.py") ==
        1);
  CHECK(std::none_of(linked_names.begin(), linked_names.end(),
                     [](const std::string& n) { return n.starts_with("corpus/linked/"); }));
}

TEST_CASE("XXH64 matches the reference implementation, whole and streamed") {
  std::string s42 = "0123456789abcdef0123456789abcdef0123456789";
  std::string s771;
  for (int r = 0; r < 3; ++r)
    for (int i = 0; i < 256; ++i) s771.push_back(static_cast<char>(i));
  s771 += "xyz";
  CHECK(xxh64("") == 0xef46db3751d8e999ULL);
  CHECK(xxh64("a") == 0xd24ec4f1a98c6e5bULL);
  CHECK(xxh64("abc") == 0x44bc2cf5ad770999ULL);
  CHECK(xxh64(s42) == 0xa76190c3acf08a1cULL);
  CHECK(xxh64(s771) == 0xe921a1b45bd779f8ULL);
  CHECK(xxh64("", 7) == 0x95f0626f6f0a4409ULL);
  CHECK(xxh64("abc", 7) == 0x9e755206156676d7ULL);
  CHECK(xxh64(s42, 7) == 0x9cdb6129259b938eULL);
  CHECK(xxh64(s771, 7) == 0xb63555d1bf05377fULL);
  for (std::size_t piece : {1, 3, 7, 31, 32, 33, 100}) {
    Xxh64 h;
    for (std::size_t at = 0; at < s771.size(); at += piece) h.update(std::string_view(s771).substr(at, piece));
    CHECK(h.digest() == 0xe921a1b45bd779f8ULL);
  }
  test::TempDir dir;
  test::write_file(dir / "f", s771);
  CHECK(xxh64_file(dir / "f") == 0xe921a1b45bd779f8ULL);
  CHECK(hex64(0xabcULL) == "0000000000000abc");
}

TEST_CASE("seeded permutations are permutations, reproducible, and differ by seed") {
  const auto a = permutation(1000, seed_derive(7, "epoch", 0));
  const auto b = permutation(1000, seed_derive(7, "epoch", 0));
  const auto c = permutation(1000, seed_derive(7, "epoch", 1));
  const auto d = permutation(1000, seed_derive(8, "epoch", 0));
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != d);
  std::vector<std::int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 1000; ++i) CHECK(sorted[static_cast<std::size_t>(i)] == i);
  // Pinned values (from a Python transcription of SplitMix64, Lemire's bounded draw, Fisher-Yates
  // and the reference xxhash): the shuffle is part of the resume contract and must not drift.
  CHECK(SplitMix64(0).next() == 0xe220a8397b1dcdafULL);
  CHECK(permutation(8, 42) == std::vector<std::int64_t>{4, 3, 2, 0, 7, 6, 1, 5});
  CHECK(seed_derive(7, "epoch", 3) == 0x61cf873dddd478b9ULL);
  CHECK(permutation(10, seed_derive(7, "epoch", 3)) == std::vector<std::int64_t>{0, 5, 6, 3, 2, 9, 1, 4, 8, 7});
  SplitMix64 rng(1);
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::uint64_t v = rng.below(5);
    CHECK(v < 5);
    seen.insert(v);
  }
  CHECK(seen.size() == 5);
  CHECK(permutation(0, 1).empty());
  CHECK(permutation(1, 1) == std::vector<std::int64_t>{0});
}
