// adapt_tokenize end to end: encodes stdin byte for byte, decodes, counts files, lays out chats, and
// fails with the documented exit codes. Uses a tokenizer folder written by tokenizer_json_write (always
// available), the committed SentencePiece-style fixture, and Meta's tokenizer.model when it is there.
#include <doctest/doctest.h>

#include "core/file.h"
#include "tests/golden/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/tokenizer_json.h"

using namespace adapt;

namespace {

struct Run {
  int code;
  std::string out;
};

// Runs adapt_tokenize with `args`, feeding `input` (written to a file first, so any bytes survive).
Run run(const test::TempDir& dir, const std::string& args, const std::string& input = "") {
  const fs::path in = dir / "stdin.bin";
  test::write_bytes(in, input);
  Run r;
  r.code = test::run_command(
      (test::binary_dir() / "bin" / "adapt_tokenize").string() + " " + args + " < " + in.string(), &r.out);
  return r;
}

// A tokenizer folder trained on inputs/corpus (Llama 3 layout, specials after 256 + 300 merges).
fs::path trained_folder(const test::TempDir& dir) {
  const fs::path out = dir / "model";
  const auto texts = tokenizer::bpe_corpus_read(test::source_dir() / "inputs" / "corpus");
  tokenizer::tokenizer_json_write(out, tokenizer::bpe_train(texts, {.n_merges = 300}));
  return out;
}

}  // namespace

TEST_CASE("encode and decode through stdin, byte for byte") {
  test::TempDir dir("adapt-tokenize-e2e");
  const fs::path model = trained_folder(dir);
  const std::string input = "int main() {\n  return 0;\n}\n\n\xff raw\n";  // trailing newline kept, invalid byte kept
  Run enc = run(dir, "--tokenizer " + model.string(), input);
  INFO(enc.out);
  REQUIRE(enc.code == 0);
  CHECK(enc.out.back() == '\n');
  test::write_bytes(dir / "ids.txt", enc.out);
  Run dec = run(dir, "--tokenizer " + model.string() + " --decode", enc.out);
  REQUIRE(dec.code == 0);
  CHECK(dec.out == "int main() {\n  return 0;\n}\n\n\xef\xbf\xbd raw\n");  // lossy only at the invalid byte

  Run bos = run(dir, "--tokenizer " + (model / "tokenizer.json").string() + " --bos", "x");
  CHECK(bos.code == 0);
  CHECK(bos.out.rfind("556 ", 0) == 0);  // <|begin_of_text|> = 256 + 300 merges

  Run special = run(dir, "--tokenizer " + model.string() + " --allow-special", "<|eot_id|>");
  CHECK(special.out == "565\n");
  Run plain = run(dir, "--tokenizer " + model.string(), "<|eot_id|>");
  CHECK(plain.out != "565\n");

  Run skip = run(dir, "--tokenizer " + model.string() + " --decode --skip-special", "556 120 565");
  CHECK(skip.out == "x");
}

TEST_CASE("--count prints per-file counts and a total; --chat lays out a dialog") {
  test::TempDir dir("adapt-tokenize-e2e");
  const fs::path model = trained_folder(dir);
  test::write_bytes(dir / "a.txt", "hello world\n");
  test::write_bytes(dir / "b.txt", "");
  Run count = run(
      dir, "--tokenizer " + model.string() + " --count " + (dir / "a.txt").string() + " " + (dir / "b.txt").string());
  INFO(count.out);
  REQUIRE(count.code == 0);
  CHECK(count.out.find("a.txt") != std::string::npos);
  CHECK(count.out.find("           0  " + (dir / "b.txt").string()) != std::string::npos);
  CHECK(count.out.find("total") != std::string::npos);

  Run chat = run(dir, "--tokenizer " + model.string() + " --chat --template meta --system 'Be brief.'", "Hi\n");
  INFO(chat.out);
  REQUIRE(chat.code == 0);
  CHECK(chat.out.rfind("556 562 ", 0) == 0);  // <|begin_of_text|> <|start_header_id|>

  const fs::path spm = test::tokenizer_fixture("spm_legacy.tokenizer.json");
  Run sp = run(dir, "--tokenizer " + spm.string() + " --bos", "Hello world");
  CHECK(sp.code == 0);
  CHECK(sp.out.rfind("1 ", 0) == 0);
  Run sp_chat = run(dir, "--tokenizer " + spm.string() + " --chat", "Hi");
  CHECK(sp_chat.code == 6);  // no Llama 3 header tokens
  CHECK(sp_chat.out.find("the Llama 3 chat layout needs the special token <|begin_of_text|>") != std::string::npos);
}

TEST_CASE("Meta's tokenizer.model: the check value through the binary") {
  const fs::path meta = test::meta_tokenizer_path();
  if (!fs::exists(meta)) {
    MESSAGE("skipped: Meta's tokenizer.model is not at " << meta.string());
    return;
  }
  test::TempDir dir("adapt-tokenize-e2e");
  Run r = run(dir, "--tokenizer " + meta.string() + " --bos", "This is a test sentence.");
  CHECK(r.code == 0);
  CHECK(r.out == "128000 2028 374 264 1296 11914 13\n");
  Run chat = run(dir, "--tokenizer " + meta.string() + " --chat", "Hello!");
  CHECK(chat.out.rfind("128000 128006 9125 128007 271 38766 1303 33025 2696 25 6790 220 2366 18 198", 0) == 0);
}

TEST_CASE("errors: usage (2), missing or malformed files and bad ids (3)") {
  test::TempDir dir("adapt-tokenize-e2e");
  const fs::path model = trained_folder(dir);
  Run none = run(dir, "--bos");
  CHECK(none.code == 2);
  CHECK(none.out.find("--tokenizer PATH is required") != std::string::npos);
  Run typo = run(dir, "--tokenizer " + model.string() + " --decod");
  CHECK(typo.code == 2);
  CHECK(typo.out.find("did you mean '--decode'") != std::string::npos);
  Run both = run(dir, "--tokenizer " + model.string() + " --decode --count x");
  CHECK(both.code == 2);
  Run missing = run(dir, "--tokenizer " + (dir / "nope").string());
  CHECK(missing.code == 3);
  CHECK(missing.out.find("does not exist") != std::string::npos);
  test::write_bytes(dir / "bad.model", "not a rank file\n");
  Run bad = run(dir, "--tokenizer " + (dir / "bad.model").string());
  CHECK(bad.code == 3);
  CHECK(bad.out.find("line 1") != std::string::npos);
  Run bad_id = run(dir, "--tokenizer " + model.string() + " --decode", "1 2 99999999");
  CHECK(bad_id.code == 3);
  CHECK(bad_id.out.find("'99999999' (id number 3)") != std::string::npos);
  Run no_file = run(dir, "--tokenizer " + model.string() + " --count " + (dir / "absent.txt").string());
  CHECK(no_file.code == 3);
  Run help = run(dir, "--help");
  CHECK(help.code == 0);
  CHECK(help.out.find("exit codes") != std::string::npos);
}
