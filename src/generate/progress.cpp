#include "generate/progress.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/file.h"
#include "generate/gen_config.h"

namespace adapt::generate {

using json = nlohmann::json;

std::string request_fingerprint(const GenerationRequest& r, std::string_view context) {
  // Every field as bytes, each preceded by its length, so no two requests give the same stream.
  std::string bytes;
  auto add = [&](const void* p, std::size_t n) {
    const std::uint64_t len = n;
    bytes.append(reinterpret_cast<const char*>(&len), sizeof len);
    bytes.append(static_cast<const char*>(p), n);
  };
  auto add_value = [&](const auto& v) { add(&v, sizeof v); };
  add(r.prompt.data(), r.prompt.size() * sizeof(std::int32_t));
  add_value(r.sampling.temperature);
  add_value(r.sampling.top_k);
  add_value(r.sampling.top_p);
  add_value(r.sampling.min_p);
  add_value(r.sampling.repetition_penalty);
  add_value(r.sampling.seed);
  add_value(r.max_new_tokens);
  for (const std::string& s : r.stop) add(s.data(), s.size());
  add(context.data(), context.size());
  // Two CRC-32C with different starting values: 64 bits, enough to tell an edited request apart.
  const std::uint32_t a = crc32c(bytes.data(), bytes.size());
  const std::uint32_t b = crc32c(bytes.data(), bytes.size(), 0x9E3779B9u);
  return fmt::format("{:08x}{:08x}", a, b);
}

std::string progress_to_json(const ProgressRecord& p) {
  nlohmann::ordered_json j;
  j["id"] = p.id;
  j["fingerprint"] = p.fingerprint;
  j["time_to_first_token_s"] = p.progress.time_to_first_token_s;
  j["decode_s"] = p.progress.decode_s;
  j["rng_state"] = p.progress.rng_state;
  j["tokens"] = p.progress.tokens;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

ProgressRecord progress_from_json(std::string_view text, const fs::path& file) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  const std::string fix = "delete it to start that prompt afresh";
  ADAPT_REQUIRE(
      j.is_object() && j.contains("id") && j.contains("fingerprint") && j.contains("tokens") && j["tokens"].is_array(),
      IoError, "{}: not a generation progress file (a JSON object with id, fingerprint and tokens); {}", file.string(),
      fix);
  ProgressRecord p;
  try {
    p.id = j.at("id").get<std::string>();
    p.fingerprint = j.at("fingerprint").get<std::string>();
    p.progress.rng_state = j.value("rng_state", std::string());
    p.progress.time_to_first_token_s = j.value("time_to_first_token_s", 0.0);
    p.progress.decode_s = j.value("decode_s", 0.0);
    p.progress.tokens = j.at("tokens").get<std::vector<std::int32_t>>();
  } catch (const json::exception& e) {
    ADAPT_THROW(IoError, "{}: malformed progress file ({}); {}", file.string(), e.what(), fix);
  }
  return p;
}

fs::path ProgressStore::path_of(const std::string& id) const {
  if (conversation_name_ok(id)) return dir_ / (id + ".json");
  return dir_ / fmt::format("id-{:08x}.json", crc32c(id.data(), id.size()));
}

std::optional<ProgressRecord> ProgressStore::load(const std::string& id, std::int64_t n_vocab) const {
  const fs::path file = path_of(id);
  if (!fs::exists(file)) return std::nullopt;
  ProgressRecord p = progress_from_json(file_read_text(file), file);
  ADAPT_REQUIRE(p.id == id, IoError, "{}: holds the progress of prompt '{}', not '{}'; delete it", file.string(), p.id,
                id);
  for (const std::int32_t t : p.progress.tokens) {
    ADAPT_REQUIRE(t >= 0 && t < n_vocab, IoError, "{}: token id {} is outside the vocabulary (0..{}); delete it",
                  file.string(), t, n_vocab - 1);
  }
  return p;
}

void ProgressStore::save(const ProgressRecord& p) const {
  fs::create_directories(dir_);
  file_write_atomic(path_of(p.id), progress_to_json(p));
}

void ProgressStore::remove(const std::string& id) const {
  std::error_code ec;
  fs::remove(path_of(id), ec);
}

fs::path ProgressStore::set_aside(const std::string& id) const {
  const fs::path from = path_of(id);
  fs::path to = from;
  to += ".stale";
  fs::rename(from, to);
  return to;
}

}  // namespace adapt::generate
