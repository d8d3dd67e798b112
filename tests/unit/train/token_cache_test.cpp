// The token cache: reused while the inputs are unchanged (a new mtime alone does not count),
// rebuilt with a log line saying why when a file changes, appears or goes away, keyed by the
// settings and the tokenizer, and a damaged file is refused or rebuilt.
#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "tests/support/test_support.h"
#include "tests/unit/train/data_test_util.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer_json.h"
#include "train/token_cache.h"

using namespace adapt;
using namespace adapt::train;

namespace {

struct Update {
  fs::path path;
  std::string log;
};

Update update(const DataConfig& c, const tokenizer::Tokenizer& tok = test::data_tokenizer(),
              const TokenCacheOptions& options = {}) {
  test::StderrCapture capture;
  Update u;
  u.path = token_cache_update(c, DataInputs::Train, tok, options);
  u.log = capture.text();
  return u;
}

fs::file_time_type mtime(const fs::path& p) { return fs::last_write_time(p); }

}  // namespace

TEST_CASE("an unchanged dataset reuses its cache; each kind of change rebuilds it and says why") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  test::write_file(dir / "corpus/a.py", "def a():\n    return 1\n");
  test::write_file(dir / "corpus/b.py", "def b():\n    return 2\n");
  DataConfig c = test::data_config(dir.path(), {(dir / "corpus").string()});
  c.globs = {"**/*.py"};

  const Update first = update(c);
  CHECK(first.path == token_cache_path(c, DataInputs::Train, tok));
  CHECK(first.path.parent_path() == dir / "cache");
  CHECK(first.log.find("no cache for these inputs and settings yet; building") != std::string::npos);
  CHECK(first.log.find("built") != std::string::npos);
  const auto built_at = mtime(first.path);

  const Update again = update(c);
  CHECK(again.path == first.path);
  CHECK(again.log.find("reusing " + first.path.string()) != std::string::npos);
  CHECK(mtime(first.path) == built_at);

  SUBCASE("touched: same bytes, new mtime -> reused") {
    fs::last_write_time(dir / "corpus/a.py", fs::last_write_time(dir / "corpus/a.py") + std::chrono::seconds(5));
    const Update u = update(c);
    CHECK(u.log.find("has a new modification time but the same bytes") != std::string::npos);
    CHECK(u.log.find("reusing") != std::string::npos);
    CHECK(mtime(first.path) == built_at);
  }
  SUBCASE("same size, other bytes -> rebuilt") {
    test::write_file(dir / "corpus/a.py", "def z():\n    return 9\n");
    const Update u = update(c);
    CHECK(u.log.find("out of date: '" + (dir / "corpus/a.py").string() +
                     "' changed (same size, different content); "
                     "rebuilding") != std::string::npos);
    const auto d = TokenDataset::open(u.path);
    const auto ids = d->document_tokens(0);
    CHECK(tok.decode(std::vector<tokenizer::TokenId>(ids.begin() + 1, ids.end() - 1)) == "def z():\n    return 9\n");
  }
  SUBCASE("other size -> rebuilt") {
    test::write_file(dir / "corpus/b.py", "def b():\n    return 22\n");
    const Update u = update(c);
    CHECK(u.log.find("changed (size 22 -> 23 bytes)") != std::string::npos);
  }
  SUBCASE("a new file matching the globs -> rebuilt") {
    test::write_file(dir / "corpus/sub/c.py", "c = 3\n");
    const Update u = update(c);
    CHECK(u.log.find("new input file '" + (dir / "corpus/sub/c.py").string() + "'") != std::string::npos);
    CHECK(TokenDataset::open(u.path)->n_documents() == 3);
  }
  SUBCASE("a file removed -> rebuilt") {
    fs::remove(dir / "corpus/b.py");
    const Update u = update(c);
    CHECK(u.log.find("input file '" + (dir / "corpus/b.py").string() + "' is gone") != std::string::npos);
    CHECK(TokenDataset::open(u.path)->n_documents() == 1);
  }
  SUBCASE("a damaged cache file -> rebuilt, and refused by open()") {
    const std::string bytes = file_read_text(first.path);
    test::write_file(first.path, bytes.substr(0, bytes.size() - 8));
    CHECK_THROWS_WITH_AS(TokenDataset::open(first.path), doctest::Contains("is truncated or damaged"), IoError);
    const Update truncated = update(c);
    CHECK(truncated.log.find("is out of date: token cache '" + first.path.string() + "' is truncated or damaged") !=
          std::string::npos);
    CHECK(file_read_text(first.path) == bytes);
    // The same size, one token's bytes changed: the tokens' checksum names it.
    {
      std::string flipped = bytes;
      std::uint64_t header_len = 0;
      std::memcpy(&header_len, flipped.data() + 8, 8);
      const auto header = nlohmann::json::parse(flipped.substr(16, header_len));
      const std::uint64_t at = header.at("sections").at("tokens").get<std::uint64_t>();
      flipped[at + 5] = static_cast<char>(flipped[at + 5] ^ 0x01);  // the second token's second byte
      test::write_file(first.path, flipped);
      const Update u = update(c);
      CHECK(u.log.find("is out of date: token cache '" + first.path.string() +
                       "' is damaged (its tokens' checksum differs)") != std::string::npos);
      CHECK(file_read_text(first.path) == bytes);
    }
    test::write_file(first.path, "garbage");
    CHECK_THROWS_WITH_AS(TokenDataset::open(first.path), doctest::Contains("is not a readable token cache"), IoError);
    const Update u = update(c);
    CHECK(u.log.find("is out of date: not a token cache") != std::string::npos);
    CHECK(TokenDataset::open(u.path)->n_documents() == 2);
  }
}

TEST_CASE("settings that change tokens, and the tokenizer, select another cache file") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  test::write_file(dir / "a.jsonl", "{\"text\": \"hello\"}\n");
  DataConfig c = test::data_config(dir.path(), {(dir / "a.jsonl").string()});
  const fs::path base = token_cache_path(c, DataInputs::Train, tok);
  DataConfig no_bos = c;
  no_bos.add_bos = false;
  CHECK(token_cache_path(no_bos, DataInputs::Train, tok) != base);
  DataConfig forced = c;
  forced.format = DataFormat::Text;
  CHECK(token_cache_path(forced, DataInputs::Train, tok) != base);
  // Settings that only change rows (seq_len, packing, masks, split, seed) reuse the same tokens.
  DataConfig rows = c;
  rows.seq_len = 17;
  rows.pack = false;
  rows.loss_on_completions_only = true;
  rows.eval_fraction = 0.5;
  rows.seed = 99;
  CHECK(token_cache_path(rows, DataInputs::Train, tok) == base);

  test::TempDir tok_dir;
  tokenizer::tokenizer_json_write(tok_dir.path(), tokenizer::bpe_train({"aaaa bbbb aaaa bbbb"}, {.n_merges = 3}));
  const auto other = tokenizer::Tokenizer::from_file(tok_dir.path());
  CHECK(tokenizer_fingerprint(other) != tokenizer_fingerprint(tok));
  CHECK(tokenizer_fingerprint(tok) == tokenizer_fingerprint(test::data_tokenizer()));
  CHECK(token_cache_path(c, DataInputs::Train, other) != base);
  const fs::path p1 = update(c).path;
  const fs::path p2 = update(c, other).path;
  CHECK(p1 != p2);
  CHECK(fs::exists(p1));
  CHECK(TokenDataset::open(p1)->fingerprint() != TokenDataset::open(p2)->fingerprint());
}

TEST_CASE("the fingerprint follows the bytes, not where the files live") {
  test::TempDir dir;
  test::write_file(dir / "x/a.jsonl", "{\"text\": \"hello\"}\n");
  test::write_file(dir / "y/a.jsonl", "{\"text\": \"hello\"}\n");
  const auto a = TokenDataset::open(update(test::data_config(dir.path(), {(dir / "x/a.jsonl").string()})).path);
  const auto b = TokenDataset::open(update(test::data_config(dir.path(), {(dir / "y/a.jsonl").string()})).path);
  CHECK(a->path() != b->path());
  CHECK(a->fingerprint() == b->fingerprint());
  CHECK(a->inputs()[0].path == (dir / "x/a.jsonl").string());
  CHECK(a->inputs()[0].size_bytes == 18);
}

TEST_CASE("the cache file: magic, JSON header, 64-byte aligned sections; progress is logged") {
  test::TempDir dir;
  std::string records;
  for (int i = 0; i < 50; ++i) records += "{\"text\": \"line " + std::to_string(i) + "\"}\n";
  test::write_file(dir / "a.jsonl", records);
  const Update u = update(test::data_config(dir.path(), {(dir / "a.jsonl").string()}), test::data_tokenizer(),
                          {.progress_seconds = 0});
  CHECK(u.log.find("token cache: 50 documents") != std::string::npos);
  CHECK(u.log.find("tokens/s") != std::string::npos);
  const std::string bytes = file_read_text(u.path);
  CHECK(bytes.substr(0, 8) == "ADAPTTOK");
  std::uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data() + 8, 8);
  const std::string header = bytes.substr(16, header_bytes);
  CHECK(header.find("\"format\":\"adapt token cache\"") != std::string::npos);
  CHECK(header.find("\"n_documents\":50") != std::string::npos);
  const auto d = TokenDataset::open(u.path);
  CHECK(reinterpret_cast<std::uintptr_t>(d->document_tokens(0).data()) % 4 == 0);
  CHECK(d->n_documents() == 50);
}
