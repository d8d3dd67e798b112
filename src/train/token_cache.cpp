#include "train/token_cache.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"
#include "train/data_config_check.h"
#include "train/data_document.h"
#include "train/data_glob.h"
#include "train/data_hash.h"

namespace adapt::train {

namespace {

using nlohmann::json;

// 2: chat data's tool results laid out as HF's template writes them (a JSON string).
constexpr std::int64_t kCacheVersion = 3;
constexpr std::string_view kMagic = "ADAPTTOK";
constexpr std::uint64_t kAlign = 64;
/// Documents tokenized per parallel chunk: bounded by count and by text bytes.
constexpr std::size_t kChunkDocs = 4096;
constexpr std::size_t kChunkBytes = 32u << 20;

const char* inputs_key(DataInputs which) { return which == DataInputs::Train ? "data.inputs" : "data.eval_inputs"; }

const std::vector<std::string>& input_list(const DataConfig& c, DataInputs which) {
  return which == DataInputs::Train ? c.inputs : c.eval_inputs;
}

json settings_json(const DataConfig& c, DataInputs which, const tokenizer::Tokenizer& tok) {
  json inputs = json::array();
  for (const std::string& in : input_list(c, which)) {
    fs::path p = fs::absolute(in).lexically_normal();
    if (!p.has_filename() && p.has_relative_path()) p = p.parent_path();
    inputs.push_back(p.string());
  }
  return json{{"version", kCacheVersion},
              {"inputs", inputs},
              {"globs", c.globs},
              {"format", data_format_name(c.format)},
              {"add_bos", c.add_bos},
              {"add_eos", c.add_eos},
              {"chat_template", kDataChatTemplate == tokenizer::ChatTemplate::Hf31 ? "hf31" : "meta"},
              {"chat_date", tokenizer::ChatOptions{}.date},
              {"tokenizer", hex64(tokenizer_fingerprint(tok))}};
}

/// Identity of the tokens: the settings except where the inputs live, and every input's bytes (so
/// a corpus moved to another folder keeps its fingerprint).
std::uint64_t dataset_fingerprint(json settings, const std::vector<CachedInput>& inputs) {
  settings.erase("inputs");
  Xxh64 h;
  h.update(settings.dump());
  for (const CachedInput& in : inputs) {
    h.update(&in.size_bytes, sizeof in.size_bytes);
    h.update(&in.xxh64, sizeof in.xxh64);
  }
  return h.digest();
}

std::vector<CachedInput> inputs_scan(const std::vector<DataFile>& files) {
  std::vector<CachedInput> out;
  for (const DataFile& f : files) {
    struct stat st {};
    ADAPT_REQUIRE(::stat(f.path.c_str(), &st) == 0, IoError, "cannot stat input '{}': {}", f.name,
                  std::strerror(errno));
    out.push_back({.path = f.path.string(),
                   .size_bytes = static_cast<std::int64_t>(st.st_size),
                   .mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
                   .xxh64 = xxh64_file(f.path)});
  }
  return out;
}

json inputs_json(const std::vector<CachedInput>& inputs) {
  json out = json::array();
  for (const CachedInput& in : inputs)
    out.push_back(
        {{"path", in.path}, {"size_bytes", in.size_bytes}, {"mtime_ns", in.mtime_ns}, {"xxh64", hex64(in.xxh64)}});
  return out;
}

std::vector<CachedInput> inputs_from_json(const json& j) {
  std::vector<CachedInput> out;
  for (const json& e : j)
    out.push_back({.path = e.at("path").get<std::string>(),
                   .size_bytes = e.at("size_bytes").get<std::int64_t>(),
                   .mtime_ns = e.at("mtime_ns").get<std::int64_t>(),
                   .xxh64 = std::stoull(e.at("xxh64").get<std::string>(), nullptr, 16)});
  return out;
}

/// Why `cached` no longer describes `now` (empty when it does). `touched` gets files whose mtime
/// changed while their bytes did not.
std::vector<std::string> inputs_diff(const std::vector<CachedInput>& cached, const std::vector<CachedInput>& now,
                                     std::vector<std::string>& touched) {
  std::vector<std::string> why;
  std::map<std::string, const CachedInput*> old;
  for (const CachedInput& c : cached) old.emplace(c.path, &c);
  for (const CachedInput& n : now) {
    auto it = old.find(n.path);
    if (it == old.end()) {
      why.push_back(fmt::format("new input file '{}'", n.path));
      continue;
    }
    const CachedInput& o = *it->second;
    if (o.size_bytes != n.size_bytes)
      why.push_back(fmt::format("'{}' changed (size {} -> {} bytes)", n.path, o.size_bytes, n.size_bytes));
    else if (o.xxh64 != n.xxh64) why.push_back(fmt::format("'{}' changed (same size, different content)", n.path));
    else if (o.mtime_ns != n.mtime_ns) touched.push_back(n.path);
    old.erase(it);
  }
  for (const auto& [path, c] : old) why.push_back(fmt::format("input file '{}' is gone", path));
  if (why.empty()) {
    // Same files and bytes but another order cannot happen for one settings key; guard anyway.
    for (std::size_t i = 0; i < now.size(); ++i)
      if (now[i].path != cached[i].path) return {"the input files are in a different order"};
  }
  return why;
}

/// The header of an existing cache, or nullopt with `problem` set.
std::optional<json> header_read(const fs::path& path, std::string& problem) {
  try {
    MappedFile f(path);
    const std::size_t size = f.size_bytes();
    if (size < 16 || std::memcmp(f.data(), kMagic.data(), kMagic.size()) != 0) {
      problem = "not a token cache (bad magic)";
      return std::nullopt;
    }
    std::uint64_t header_bytes = 0;
    std::memcpy(&header_bytes, f.data() + 8, 8);
    if (header_bytes > size - 16) {
      problem = "truncated header";
      return std::nullopt;
    }
    return json::parse(reinterpret_cast<const char*>(f.data()) + 16,
                       reinterpret_cast<const char*>(f.data()) + 16 + header_bytes);
  } catch (const std::exception& e) {
    problem = e.what();
    return std::nullopt;
  }
}

std::uint64_t align_up(std::uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

/// Everything a build produces until it is written: the tokens and their flags in scratch files in the
/// cache folder (5 bytes a token: a corpus of billions of tokens is not held in RAM), the per-document
/// arrays in memory.
struct BuiltCache {
  std::unique_ptr<ScratchFile> tokens;  // i32 per token, documents in order
  std::unique_ptr<ScratchFile> flags;   // u8 TokenFlag bits per token
  Xxh64 tokens_hash, flags_hash;        // of the two sections' bytes, checked when the cache is reused
  std::int64_t n_tokens = 0;
  std::vector<std::int64_t> offsets{0};
  std::vector<std::uint32_t> doc_input;
  std::int64_t n_records = 0;
  std::int64_t n_empty = 0;
};

struct PendingDoc {
  DataDocument doc;
  std::uint32_t input = 0;
};

class CacheBuilder {
 public:
  CacheBuilder(const tokenizer::Tokenizer& tok, const DocumentTokenizeOptions& opts, int n_threads,
               const std::vector<DataFile>& files, double progress_seconds, const fs::path& scratch_dir)
      : tok_(tok), opts_(opts), n_threads_(n_threads), files_(files), progress_seconds_(progress_seconds) {
    out_.tokens = std::make_unique<ScratchFile>(scratch_dir, "the token cache's tokens");
    out_.flags = std::make_unique<ScratchFile>(scratch_dir, "the token cache's token flags");
  }

  BuiltCache run(const std::optional<DataFormat>& format) {
    for (std::size_t i = 0; i < files_.size(); ++i) {
      file_index_ = i;
      const FileReadStats st = data_file_read(files_[i], format, [&](DataDocument&& d) {
        pending_bytes_ += d.text.size() + d.prompt.size() + d.completion.size();
        for (const auto& m : d.messages) pending_bytes_ += m.content.size();
        pending_.push_back({std::move(d), static_cast<std::uint32_t>(i)});
        if (pending_.size() >= kChunkDocs || pending_bytes_ >= kChunkBytes) flush();
      });
      out_.n_records += st.n_records;
      out_.n_empty += st.n_empty;
    }
    flush();
    return std::move(out_);
  }

  double seconds() const { return timer_.seconds(); }

 private:
  void flush() {
    const std::size_t n = pending_.size();
    if (n == 0) return;
    std::vector<std::vector<std::int32_t>> toks(n);
    std::vector<std::vector<std::uint8_t>> flags(n);
    std::vector<std::exception_ptr> errors(n);
    std::atomic<std::size_t> next{0};
    auto work = [&] {
      for (std::size_t k; (k = next.fetch_add(1)) < n;) {
        try {
          document_tokenize(pending_[k].doc, tok_, opts_, toks[k], flags[k]);
        } catch (...) {
          errors[k] = std::current_exception();
        }
      }
    };
    const int n_workers = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(n_threads_), n));
    std::vector<std::thread> workers;
    for (int t = 1; t < n_workers; ++t) workers.emplace_back(work);
    work();
    for (std::thread& t : workers) t.join();
    for (std::size_t k = 0; k < n; ++k) {
      if (errors[k]) rethrow_at(errors[k], pending_[k]);
      out_.tokens->append(toks[k].data(), toks[k].size() * sizeof(std::int32_t));
      out_.flags->append(flags[k].data(), flags[k].size());
      out_.tokens_hash.update(toks[k].data(), toks[k].size() * sizeof(std::int32_t));
      out_.flags_hash.update(flags[k].data(), flags[k].size());
      out_.n_tokens += static_cast<std::int64_t>(toks[k].size());
      out_.offsets.push_back(out_.n_tokens);
      out_.doc_input.push_back(pending_[k].input);
    }
    pending_.clear();
    pending_bytes_ = 0;
    if (timer_.seconds() - last_progress_ >= progress_seconds_) {
      last_progress_ = timer_.seconds();
      log::info0("token cache: {} documents, {} tokens, {:.0f} tokens/s (file {}/{}: {})",
                 format_count(static_cast<std::int64_t>(out_.doc_input.size())), format_count(out_.n_tokens),
                 static_cast<double>(out_.n_tokens) / std::max(1e-9, timer_.seconds()), file_index_ + 1, files_.size(),
                 files_[file_index_].name);
    }
  }

  [[noreturn]] void rethrow_at(const std::exception_ptr& e, const PendingDoc& p) const {
    const std::string where =
        p.doc.line > 0 ? fmt::format("{}:{}", files_[p.input].name, p.doc.line) : files_[p.input].name;
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      throw Error(
          fmt::format("{}: cannot tokenize this {} document: {}", where, record_format_name(p.doc.format), err.what()),
          err.where(), err.exit_code());
    }
  }

  const tokenizer::Tokenizer& tok_;
  DocumentTokenizeOptions opts_;
  int n_threads_;
  const std::vector<DataFile>& files_;
  double progress_seconds_;
  std::size_t file_index_ = 0;
  std::vector<PendingDoc> pending_;
  std::size_t pending_bytes_ = 0;
  BuiltCache out_;
  Timer timer_;
  double last_progress_ = 0;
};

/// "" when the tokens and flags of `ds` have the XXH64 its header recorded; else which section differs.
std::string body_damage(const TokenDataset& ds, const json& header) {
  const std::int64_t n = ds.n_tokens();
  Xxh64 tokens, flags;
  if (n > 0) {  // the sections are contiguous, document 0 first
    tokens.update(ds.document_tokens(0).data(), static_cast<std::size_t>(n) * sizeof(std::int32_t));
    flags.update(ds.document_flags(0).data(), static_cast<std::size_t>(n));
  }
  if (hex64(tokens.digest()) != header.at("tokens_xxh64").get<std::string>()) return "its tokens' checksum differs";
  if (hex64(flags.digest()) != header.at("flags_xxh64").get<std::string>()) return "its flags' checksum differs";
  return {};
}

void cache_write(const fs::path& path, const BuiltCache& b, json header) {
  const auto n_tokens = static_cast<std::uint64_t>(b.n_tokens);
  const auto n_docs = static_cast<std::uint64_t>(b.doc_input.size());
  // Section offsets depend on the header's length, which depends on the offsets: reserve a fixed
  // width by writing them as 20-digit numbers first, then fill them in.
  header["sections"] = {{"tokens", 0}, {"flags", 0}, {"offsets", 0}, {"doc_input", 0}};
  header["token_dtype"] = "i32";
  std::uint64_t header_bytes = header.dump().size() + 4 * 20;
  std::uint64_t at = align_up(16 + header_bytes);
  const std::uint64_t tokens_at = at;
  at = align_up(at + n_tokens * 4);
  const std::uint64_t flags_at = at;
  at = align_up(at + n_tokens);
  const std::uint64_t offsets_at = at;
  at = align_up(at + (n_docs + 1) * 8);
  const std::uint64_t doc_input_at = at;
  header["sections"] = {
      {"tokens", tokens_at}, {"flags", flags_at}, {"offsets", offsets_at}, {"doc_input", doc_input_at}};
  const std::string text = header.dump();
  ADAPT_CHECK(16 + text.size() <= tokens_at, "token cache header does not fit its reserved space");
  fs::create_directories(path.parent_path());
  file_write_atomic(path, [&](int fd) {
    std::uint64_t pos = 0;
    const std::string zeros(kAlign, '\0');
    auto put = [&](const void* data, std::uint64_t n_bytes) {
      fd_write_all(fd, data, n_bytes, path);
      pos += n_bytes;
    };
    auto pad_to = [&](std::uint64_t target) {
      ADAPT_CHECK(pos <= target, "token cache section overlap");
      while (pos < target) put(zeros.data(), std::min<std::uint64_t>(target - pos, kAlign));
    };
    put(kMagic.data(), kMagic.size());
    const std::uint64_t text_bytes = text.size();
    put(&text_bytes, 8);
    put(text.data(), text.size());
    pad_to(tokens_at);
    ADAPT_CHECK(b.tokens->size_bytes() == n_tokens * 4 && b.flags->size_bytes() == n_tokens,
                "token cache scratch files hold {} and {} bytes for {} tokens", b.tokens->size_bytes(),
                b.flags->size_bytes(), n_tokens);
    b.tokens->copy_to(fd, path);
    pos += n_tokens * 4;
    pad_to(flags_at);
    b.flags->copy_to(fd, path);
    pos += n_tokens;
    pad_to(offsets_at);
    put(b.offsets.data(), (n_docs + 1) * 8);
    pad_to(doc_input_at);
    put(b.doc_input.data(), n_docs * 4);
  });
}

}  // namespace

std::uint64_t tokenizer_fingerprint(const tokenizer::Tokenizer& tok) {
  Xxh64 h(0x70c1);
  auto put_i64 = [&](std::int64_t v) { h.update(&v, sizeof v); };
  put_i64(static_cast<std::int64_t>(tok.kind()));
  put_i64(tok.n_vocab());
  put_i64(tok.bos_id());
  for (tokenizer::TokenId e : tok.eos_ids()) put_i64(e);
  for (tokenizer::TokenId id = 0; id < tok.n_vocab(); ++id) {
    std::string bytes;
    try {
      bytes = tok.token_bytes(id);
    } catch (const IoError&) {
      bytes = "\x01<no token>";
    }
    put_i64(static_cast<std::int64_t>(bytes.size()));
    h.update(bytes);
    put_i64(tok.is_special(id) ? 1 : 0);
  }
  static constexpr std::string_view kProbe =
      "def main(argv):\n    for i in range(10):  # loop\n        print(f\"{i:>3} héllo wörld\")\n"
      "int main() { return std::accumulate(v.begin(), v.end(), 0LL) >> 2; }\n"
      "SELECT name, COUNT(*) FROM users WHERE id <> 42;\n\t\t// 変数 = 123456789; émoji 🙂 ...\r\n";
  for (tokenizer::TokenId id : tok.encode(kProbe)) put_i64(id);
  return h.digest();
}

fs::path token_cache_path(const DataConfig& config, DataInputs which, const tokenizer::Tokenizer& tok) {
  ADAPT_REQUIRE(!config.cache_dir.empty(), ConfigError,
                "data.cache_dir is not set; name a folder (shared by all ranks) for the tokenized data");
  const std::string key = hex64(xxh64(settings_json(config, which, tok).dump()));
  return config.cache_dir / ("tokens-" + key + ".bin");
}

fs::path token_cache_update(const DataConfig& config, DataInputs which, const tokenizer::Tokenizer& tok,
                            const TokenCacheOptions& options) {
  const char* key = inputs_key(which);
  ADAPT_REQUIRE(!input_list(config, which).empty(), ConfigError, "{} is empty; list JSON Lines files or source folders",
                key);
  ADAPT_REQUIRE(!config.add_bos || tok.bos_id() != tokenizer::kNoToken, ConfigError,
                "data.add_bos = true but the tokenizer ({}) has no BOS token; set data.add_bos = false",
                tok.description());
  ADAPT_REQUIRE(!config.add_eos || !tok.eos_ids().empty(), ConfigError,
                "data.add_eos = true but the tokenizer ({}) has no EOS token; set data.add_eos = false",
                tok.description());
  const json settings = settings_json(config, which, tok);
  const std::string settings_text = settings.dump();
  const std::string settings_key = hex64(xxh64(settings_text));
  const fs::path path = config.cache_dir / ("tokens-" + settings_key + ".bin");

  const std::vector<DataFile> files =
      data_files_discover(input_list(config, which), config.globs, key, config.cache_dir);
  Timer hash_timer;
  const std::vector<CachedInput> now = inputs_scan(files);
  std::int64_t total_bytes = 0;
  for (const CachedInput& c : now) total_bytes += c.size_bytes;

  std::string problem;
  if (fs::exists(path)) {
    if (std::optional<json> header = header_read(path, problem)) {
      try {
        if (header->at("version").get<std::int64_t>() != kCacheVersion) {
          problem = fmt::format("written by cache format version {}", header->at("version").dump());
        } else if (header->at("settings").dump() != settings_text) {
          problem = "its settings differ (hash collision of the cache key)";
        } else {
          std::vector<std::string> touched;
          const std::vector<std::string> why = inputs_diff(inputs_from_json(header->at("inputs")), now, touched);
          if (why.empty()) {
            // The sections must be intact too: sizes (open() throws IoError otherwise), then their bytes.
            const std::string damaged = body_damage(*TokenDataset::open(path), *header);
            ADAPT_REQUIRE(damaged.empty(), IoError, "token cache '{}' is damaged ({})", path.string(), damaged);
            for (const std::string& t : touched)
              log::info0("token cache: '{}' has a new modification time but the same bytes; still valid", t);
            log::info0("token cache: reusing {} ({} files, {} and the cache's {} tokens checked in {:.2f} s)",
                       path.string(), now.size(), format_bytes(static_cast<std::uint64_t>(total_bytes)),
                       format_count(header->at("n_tokens").get<std::int64_t>()), hash_timer.seconds());
            return path;
          }
          const std::size_t shown = std::min<std::size_t>(why.size(), 5);
          problem = join(std::vector<std::string>(why.begin(), why.begin() + static_cast<std::ptrdiff_t>(shown)), "; ");
          if (why.size() > shown) problem += fmt::format("; and {} more", why.size() - shown);
        }
      } catch (const Error& e) {
        problem = e.what();
      } catch (const std::exception& e) {
        problem = fmt::format("unreadable header ({})", e.what());
      }
    }
    log::info0("token cache: {} is out of date: {}; rebuilding", path.string(), problem);
  } else {
    log::info0("token cache: no cache for these inputs and settings yet; building {}", path.string());
  }

  const int n_threads = config.tokenize_threads ? static_cast<int>(*config.tokenize_threads)
                                                : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  log::info0("token cache: tokenizing {} files ({}) of {} with {} threads", files.size(),
             format_bytes(static_cast<std::uint64_t>(total_bytes)), key, n_threads);
  fs::create_directories(path.parent_path());
  CacheBuilder builder(tok, {.add_bos = config.add_bos, .add_eos = config.add_eos}, n_threads, files,
                       options.progress_seconds, path.parent_path());
  const BuiltCache built = builder.run(config.format);
  const auto n_docs = static_cast<std::int64_t>(built.doc_input.size());
  if (n_docs == 0) {
    std::vector<std::string> listed;
    for (const std::string& in : input_list(config, which)) listed.push_back("'" + in + "'");
    ADAPT_THROW(IoError,
                "no usable examples in {} = [{}]: {} files, {} records, {} of them empty. Records need a non-empty "
                "\"text\", \"completion\" or \"messages\"; source files must not be empty.",
                key, join(listed, ", "), files.size(), built.n_records, built.n_empty);
  }
  ADAPT_REQUIRE(built.n_tokens < (std::int64_t{1} << 62) && files.size() < (std::size_t{1} << 32), UnsupportedError,
                "token cache too large");
  json header{{"format", "adapt token cache"},
              {"version", kCacheVersion},
              {"settings", settings},
              {"settings_key", settings_key},
              {"tokenizer", tok.description()},
              {"inputs", inputs_json(now)},
              {"fingerprint", hex64(dataset_fingerprint(settings, now))},
              {"n_documents", n_docs},
              {"n_tokens", built.n_tokens},
              {"tokens_xxh64", hex64(built.tokens_hash.digest())},
              {"flags_xxh64", hex64(built.flags_hash.digest())},
              {"n_records", built.n_records},
              {"n_empty_records", built.n_empty},
              {"pad_id", tok.eos_ids().empty() ? 0 : tok.eos_ids().front()}};
  cache_write(path, built, std::move(header));
  const double s = builder.seconds();
  log::info0(
      "token cache: built {}: {} documents, {} tokens ({} empty records skipped) from {} files in {:.1f} s "
      "({:.0f} tokens/s)",
      path.string(), format_count(n_docs), format_count(built.n_tokens), built.n_empty, files.size(), s,
      static_cast<double>(built.n_tokens) / std::max(1e-9, s));
  return path;
}

std::shared_ptr<const TokenDataset> TokenDataset::open(const fs::path& path) {
  std::shared_ptr<TokenDataset> d(new TokenDataset());
  ADAPT_REQUIRE(fs::exists(path), IoError,
                "token cache '{}' does not exist; token_cache_update() builds it (on rank 0, before the other ranks "
                "open it)",
                path.string());
  d->file_ = MappedFile(path);
  std::string problem;
  std::optional<json> header = header_read(path, problem);
  ADAPT_REQUIRE(header.has_value(), IoError, "'{}' is not a readable token cache: {}. Delete it; it is rebuilt.",
                path.string(), problem);
  const std::uint64_t size = d->file_.size_bytes();
  try {
    const std::int64_t version = header->at("version").get<std::int64_t>();
    ADAPT_REQUIRE(version == kCacheVersion, IoError,
                  "token cache '{}' has format version {}, this build reads {}. Delete it; it is rebuilt.",
                  path.string(), version, kCacheVersion);
    d->n_documents_ = header->at("n_documents").get<std::int64_t>();
    d->n_tokens_ = header->at("n_tokens").get<std::int64_t>();
    d->pad_id_ = header->at("pad_id").get<std::int32_t>();
    d->n_empty_records_ = header->at("n_empty_records").get<std::int64_t>();
    d->inputs_ = inputs_from_json(header->at("inputs"));
    d->fingerprint_ = std::stoull(header->at("fingerprint").get<std::string>(), nullptr, 16);
    ADAPT_REQUIRE(d->n_documents_ >= 0 && d->n_tokens_ >= 0 && static_cast<std::uint64_t>(d->n_tokens_) < size &&
                      static_cast<std::uint64_t>(d->n_documents_) < size,
                  IoError,
                  "token cache '{}' is damaged ({} documents, {} tokens in {} bytes). Delete it; it is rebuilt.",
                  path.string(), d->n_documents_, d->n_tokens_, size);
    const json& sec = header->at("sections");
    const auto n_tok = static_cast<std::uint64_t>(d->n_tokens_);
    const auto n_doc = static_cast<std::uint64_t>(d->n_documents_);
    auto section = [&](const char* name, std::uint64_t n_bytes) -> const std::uint8_t* {
      const std::uint64_t at = sec.at(name).get<std::uint64_t>();
      ADAPT_REQUIRE(at % kAlign == 0 && at <= size && n_bytes <= size - at, IoError,
                    "token cache '{}' is truncated or damaged: section '{}' ({} bytes at {}) does not fit its {} "
                    "bytes. Delete it; it is rebuilt.",
                    path.string(), name, n_bytes, at, size);
      return d->file_.data() + at;
    };
    d->tokens_ = reinterpret_cast<const std::int32_t*>(section("tokens", n_tok * 4));
    d->flags_ = section("flags", n_tok);
    d->offsets_ = reinterpret_cast<const std::int64_t*>(section("offsets", (n_doc + 1) * 8));
    d->doc_input_ = reinterpret_cast<const std::uint32_t*>(section("doc_input", n_doc * 4));
  } catch (const nlohmann::json::exception& e) {
    ADAPT_THROW(IoError, "token cache '{}' has a malformed header ({}). Delete it; it is rebuilt.", path.string(),
                e.what());
  }
  ADAPT_REQUIRE(d->offsets_[0] == 0 && d->offsets_[d->n_documents_] == d->n_tokens_, IoError,
                "token cache '{}' is damaged (document offsets do not span its {} tokens). Delete it; it is rebuilt.",
                path.string(), d->n_tokens_);
  for (std::int64_t i = 0; i < d->n_documents_; ++i) {
    ADAPT_REQUIRE(d->offsets_[i] <= d->offsets_[i + 1] && d->doc_input_[i] < d->inputs_.size(), IoError,
                  "token cache '{}' is damaged (document {}). Delete it; it is rebuilt.", path.string(), i);
  }
  return d;
}

std::span<const std::int32_t> TokenDataset::document_tokens(std::int64_t doc) const {
  ADAPT_CHECK(doc >= 0 && doc < n_documents_, "document {} of {}", doc, n_documents_);
  return {tokens_ + offsets_[doc], static_cast<std::size_t>(document_size(doc))};
}

std::span<const std::uint8_t> TokenDataset::document_flags(std::int64_t doc) const {
  ADAPT_CHECK(doc >= 0 && doc < n_documents_, "document {} of {}", doc, n_documents_);
  return {flags_ + offsets_[doc], static_cast<std::size_t>(document_size(doc))};
}

}  // namespace adapt::train
