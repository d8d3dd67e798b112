// A conversation's KV cache kept between generation jobs (output.conversation_kv): after a turn, the
// keys and values of every position its cache row holds are written beside the conversation's JSON
// (<name>.kv), so that the next turn, whose prompt starts with the same tokens, loads them instead of
// prefilling the whole conversation again. Attention is causal, so the cache of a prefix of tokens is
// the same whatever follows: the next turn loads the longest stored prefix its prompt shares, at most
// all but the prompt's last token, and prefills the rest.
//
// File: "ADAPTKV1", the header's length (u64, little-endian), the header (JSON: the identity of the
// model and adapter that computed it, the element type, the layers and KV heads held, head_dim, the
// number of positions and their token ids), then per layer the keys and the values, (KV heads,
// positions, head_dim) each, and last a CRC-32C of everything before it. Written atomically.
// A file that does not fit (another model, adapter, device, layout or element type, other tokens, a
// wrong size or checksum) is not used: the turn is prefilled whole and the reason is returned. With tp
// or pp > 1 each rank keeps its part (its KV heads of its stage's layers) in a file of its own.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>

#include "model/kv_cache.h"

namespace adapt::generate {

namespace fs = std::filesystem;

/// What computed a cache: the model folder's config.json and weight files and the adapter folder's
/// files (names, sizes, modification times), and `extra` (the device and the weights' dtype there).
/// Two runs that could compute different keys and values get different identities.
std::string kv_compute_identity(const fs::path& model_dir, const std::optional<fs::path>& adapter_dir,
                                const std::string& extra);

/// Writes positions [0, tokens.size()) of `row` (tokens.size() <= cache.n_past(row)) to `file`
/// atomically. IoError naming the file on failure (a full disk); the previous file is then untouched.
void kv_snapshot_save(const fs::path& file, model::KvCache& cache, std::int64_t row,
                      std::span<const std::int32_t> tokens, const std::string& identity);

struct KvSnapshotLoad {
  std::int64_t positions = 0;  // loaded into the row (0: none; the turn is prefilled whole)
  std::string why_not;         // when nothing was loaded from an existing file: the reason
};

/// Loads into empty `row` the longest prefix of `prompt` (at most prompt.size() − 1 tokens) that
/// `file` holds, when the file was written for `identity` and the cache's layout; the caller marks
/// the positions filled (cache.advance). No file: {0, ""}.
KvSnapshotLoad kv_snapshot_load(const fs::path& file, model::KvCache& cache, std::int64_t row,
                                std::span<const std::int32_t> prompt, const std::string& identity);

}  // namespace adapt::generate
