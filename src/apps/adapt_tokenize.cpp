// adapt_tokenize: text ↔ token ids with a model's tokenizer: stdin byte for byte → ids on stdout, the
// reverse with --decode, token counts of files with --count (usage text below, kUsage).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/app_main.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using namespace adapt;
using namespace adapt::tokenizer;

namespace {

constexpr const char* kUsage = R"(usage:
  adapt_tokenize --tokenizer PATH [options]          stdin (bytes) → token ids on stdout
  adapt_tokenize --tokenizer PATH --decode           stdin (ids) → text on stdout
  adapt_tokenize --tokenizer PATH --count FILE...    token count per file and the total

PATH is a model folder (its tokenizer.json, else tokenizer.model), an HF tokenizer.json (Llama 3
byte-level or Llama 2 / CodeLlama SentencePiece style) or Meta's Llama 3 tokenizer.model.

Encoding reads stdin byte for byte (nothing is stripped, invalid UTF-8 is encoded as its bytes) and
prints the ids separated by spaces, then a newline. No special tokens are added unless asked:
  --bos                   prepend the BOS token (<|begin_of_text|> / <s>)
  --allow-special         special-token text in the input (e.g. <|eot_id|>) becomes its id; by default it
                          is encoded as ordinary text, as tiktoken does
  --chat                  the input is one user message; print the ids of the Llama 3.1 chat layout
                          with the generation prompt (implies BOS)
  --system TEXT           with --chat: a system message before the user message
  --template hf|meta      with --chat: HF's Llama 3.1 template (default; always writes a system block
                          with "Cutting Knowledge Date: December 2023" and "Today Date: 26 Jul 2024")
                          or Meta's plain layout (no default system block)
Decoding:
  --decode                stdin holds ids separated by white space; writes their text (lossy UTF-8:
                          invalid sequences become U+FFFD), special tokens as their text
  --skip-special          with --decode: leave special tokens out
Counting:
  --count FILE...         encode each file (as with the options above) and print "count  path" per
                          file and "count  total"
  --time                  also print load time and encoding speed (MB/s) to stderr

exit codes:
  0 success; 2 bad command line; 3 the tokenizer or an input file is missing or malformed, or --decode
  read something that is not a token id of this tokenizer; 6 the tokenizer uses a feature adapt does
  not implement (the message names it); 70 internal error.
)";

[[noreturn]] void usage_error(const std::string& msg) {
  ADAPT_THROW(ConfigError, "{}\nRun `adapt_tokenize --help` for usage.", msg);
}

struct Args {
  std::map<std::string, std::string> options;
  std::vector<std::string> flags;
  std::vector<std::string> files;  // after --count
  bool has(const std::string& f) const { return std::find(flags.begin(), flags.end(), f) != flags.end(); }
};

Args parse_args(int argc, char** argv) {
  const std::vector<std::string> valued = {"--tokenizer", "--system", "--template"};
  const std::vector<std::string> bare = {"--bos",          "--allow-special", "--chat", "--decode",
                                         "--skip-special", "--count",         "--time"};
  Args a;
  bool counting = false;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (s.rfind("--", 0) != 0) {
      if (!counting) usage_error(fmt::format("unexpected argument '{}' (input files are given after --count)", s));
      a.files.push_back(s);
      continue;
    }
    std::string key = s, value;
    const auto eq = s.find('=');
    if (eq != std::string::npos) key = s.substr(0, eq), value = s.substr(eq + 1);
    if (std::find(valued.begin(), valued.end(), key) != valued.end()) {
      if (eq == std::string::npos) {
        if (i + 1 >= argc) usage_error(fmt::format("option {} needs a value", key));
        value = argv[++i];
      }
      a.options[key] = value;
    } else if (std::find(bare.begin(), bare.end(), key) != bare.end() && eq == std::string::npos) {
      a.flags.push_back(key);
      counting = counting || key == "--count";
    } else {
      std::vector<std::string> all = valued;
      all.insert(all.end(), bare.begin(), bare.end());
      usage_error(fmt::format("unknown option {}{}", key, did_you_mean(key, all)));
    }
  }
  return a;
}

std::string read_stdin() {
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n == 0) break;
    ADAPT_REQUIRE(n > 0 || errno == EINTR, IoError, "cannot read stdin: {}", std::strerror(errno));
    if (n > 0) data.append(buf, static_cast<std::size_t>(n));
  }
  return data;
}

void write_stdout(std::string_view bytes) {
  ADAPT_REQUIRE(std::fwrite(bytes.data(), 1, bytes.size(), stdout) == bytes.size() && std::fflush(stdout) == 0, IoError,
                "cannot write to stdout");
}

std::string ids_text(const std::vector<TokenId>& ids) {
  std::string out;
  out.reserve(ids.size() * 7);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out.push_back(' ');
    out += std::to_string(ids[i]);
  }
  out.push_back('\n');
  return out;
}

std::vector<TokenId> parse_ids(std::string_view text, const Tokenizer& tok) {
  std::vector<TokenId> ids;
  std::size_t pos = 0;
  while (true) {
    pos = text.find_first_not_of(" \t\r\n,", pos);
    if (pos == std::string_view::npos) break;
    const std::size_t end = std::min(text.find_first_of(" \t\r\n,", pos), text.size());
    const std::string_view word = text.substr(pos, end - pos);
    std::int64_t id = -1;
    auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), id);
    ADAPT_REQUIRE(ec == std::errc() && ptr == word.data() + word.size() && id >= 0 && id < tok.n_vocab(), IoError,
                  "--decode input: '{}' (id number {}) is not a token id of {} (expected integers in [0, {}) separated "
                  "by white space)",
                  word.substr(0, 40), ids.size() + 1, tok.description(), tok.n_vocab());
    ids.push_back(static_cast<TokenId>(id));
    pos = end;
  }
  return ids;
}

std::vector<TokenId> encode_input(const Tokenizer& tok, const Args& a, std::string_view text) {
  if (!a.has("--chat")) return tok.encode(text, {.bos = a.has("--bos"), .allow_special = a.has("--allow-special")});
  ChatOptions options{.allow_special = a.has("--allow-special")};
  if (auto it = a.options.find("--template"); it != a.options.end()) {
    if (it->second == "meta") {
      options.layout = ChatTemplate::Meta;
    } else if (it->second != "hf") {
      usage_error(fmt::format("--template must be hf or meta, got '{}'", it->second));
    }
  }
  std::vector<ChatMessage> messages;
  if (auto it = a.options.find("--system"); it != a.options.end()) messages.push_back({"system", it->second});
  messages.push_back({"user", std::string(text)});
  return chat_encode(tok, messages, options);
}

int run(const Args& a) {
  auto tok_it = a.options.find("--tokenizer");
  if (tok_it == a.options.end())
    usage_error("--tokenizer PATH is required (a model folder, tokenizer.json or tokenizer.model)");
  const int n_modes = int(a.has("--decode")) + int(a.has("--count")) + int(a.has("--chat"));
  if (n_modes > 1) usage_error("--decode, --count and --chat exclude each other");
  if (a.has("--count") && a.files.empty()) usage_error("--count needs at least one FILE");
  if (!a.has("--chat") && (a.options.count("--system") || a.options.count("--template")))
    usage_error("--system and --template only apply with --chat");
  if (a.has("--skip-special") && !a.has("--decode")) usage_error("--skip-special only applies with --decode");

  Timer load_timer;
  const Tokenizer tok = Tokenizer::from_file(tok_it->second);
  const double load_s = load_timer.seconds();
  if (a.has("--time")) log::info0("loaded {} in {:.3f} s", tok.description(), load_s);

  if (a.has("--decode")) {
    write_stdout(tok.decode(parse_ids(read_stdin(), tok), {.skip_special = a.has("--skip-special")}));
    return 0;
  }
  if (!a.has("--count")) {
    write_stdout(ids_text(encode_input(tok, a, read_stdin())));
    return 0;
  }
  std::int64_t total = 0;
  std::uint64_t total_bytes = 0;
  double encode_s = 0;
  std::string out;
  for (const std::string& f : a.files) {
    ADAPT_REQUIRE(fs::is_regular_file(f), IoError, "--count: '{}' is not a readable file", f);
    const std::string text = file_read_text(f);
    Timer t;
    const auto n = static_cast<std::int64_t>(encode_input(tok, a, text).size());
    encode_s += t.seconds();
    total += n;
    total_bytes += text.size();
    out += fmt::format("{:>12}  {}\n", n, f);
  }
  out += fmt::format("{:>12}  total\n", total);
  write_stdout(out);
  if (a.has("--time"))
    log::info0("encoded {} bytes into {} tokens in {:.3f} s: {:.2f} MB/s", total_bytes, total, encode_s,
               static_cast<double>(total_bytes) / 1e6 / std::max(encode_s, 1e-9));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return adapt::app_main([&]() -> int {
    if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
      std::fputs(kUsage, argc < 2 ? stderr : stdout);
      return argc < 2 ? static_cast<int>(ExitCode::Usage) : 0;
    }
    return run(parse_args(argc, argv));
  });
}
