#include "generate/kv_snapshot.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/file.h"

namespace adapt::generate {

namespace {

constexpr char kMagic[8] = {'A', 'D', 'A', 'P', 'T', 'K', 'V', '1'};
constexpr std::uint64_t kMaxHeaderBytes = 1ull << 30;

// "name size mtime" of each regular file below `dir` (sorted), or of `dir` itself when it is a file.
void describe_files(std::string& out, const fs::path& dir, bool recursive, bool (*keep)(const fs::path&)) {
  std::vector<std::string> lines;
  std::error_code ec;
  auto add = [&](const fs::path& p) {
    if (!fs::is_regular_file(p, ec) || (keep && !keep(p))) return;
    const auto mtime = fs::last_write_time(p, ec).time_since_epoch().count();
    lines.push_back(fmt::format("{} {} {}", fs::relative(p, dir, ec).generic_string(), fs::file_size(p, ec), mtime));
  };
  if (recursive) {
    for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) add(it->path());
  } else {
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) add(it->path());
  }
  std::sort(lines.begin(), lines.end());
  for (const std::string& l : lines) out += l + "\n";
}

bool is_model_file(const fs::path& p) { return p.extension() == ".safetensors" || p.filename() == "config.json"; }

}  // namespace

std::string kv_compute_identity(const fs::path& model_dir, const std::optional<fs::path>& adapter_dir,
                                const std::string& extra) {
  std::string id = "model " + fs::weakly_canonical(model_dir).string() + "\n";
  describe_files(id, model_dir, false, is_model_file);
  if (adapter_dir) {
    id += "adapter " + fs::weakly_canonical(*adapter_dir).string() + "\n";
    describe_files(id, *adapter_dir, true, nullptr);
  }
  return id + extra;
}

void kv_snapshot_save(const fs::path& file, model::KvCache& cache, std::int64_t row,
                      std::span<const std::int32_t> tokens, const std::string& identity) {
  const auto n = static_cast<std::int64_t>(tokens.size());
  nlohmann::ordered_json h;
  h["identity"] = identity;
  h["dtype"] = dtype_name(cache.dtype());
  h["layers"] = {cache.layers().begin, cache.layers().count};
  h["kv_heads"] = cache.n_kv_heads();
  h["head_dim"] = cache.head_dim();
  h["positions"] = n;
  h["tokens"] = std::vector<std::int32_t>(tokens.begin(), tokens.end());
  const std::string header = h.dump();
  std::vector<char> k(cache.row_bytes(n)), v(k.size());
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);  // a failure shows as file_write_atomic's IoError
  file_write_atomic(file, [&](int fd) {
    std::uint32_t crc = 0;
    auto put = [&](const void* data, std::size_t bytes) {
      fd_write_all(fd, data, bytes, file);
      crc = crc32c(data, bytes, crc);
    };
    const std::uint64_t header_len = header.size();
    put(kMagic, sizeof(kMagic));
    put(&header_len, sizeof(header_len));
    put(header.data(), header.size());
    for (int layer = cache.layers().begin; layer < cache.layers().end(); ++layer) {
      cache.read_row(layer, row, n, k.data(), v.data());
      put(k.data(), k.size());
      put(v.data(), v.size());
    }
    fd_write_all(fd, &crc, sizeof(crc), file);
  });
}

KvSnapshotLoad kv_snapshot_load(const fs::path& file, model::KvCache& cache, std::int64_t row,
                                std::span<const std::int32_t> prompt, const std::string& identity) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return {};
  auto reject = [&](std::string why) { return KvSnapshotLoad{.positions = 0, .why_not = std::move(why)}; };
  // One descriptor for every read: a save of the same conversation meanwhile (a rename over the file)
  // cannot mix two files' bytes, and the checksum covers exactly the bytes copied into the cache.
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return reject(fmt::format("it cannot be opened ({})", std::strerror(errno)));
  const struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return reject(fmt::format("it cannot be read ({})", std::strerror(errno)));
  const auto size = static_cast<std::uint64_t>(st.st_size);
  auto read_at = [&](std::uint64_t offset, void* dst, std::size_t n_bytes) {
    fd_read_at(fd, offset, dst, n_bytes, file);
  };
  char magic[8] = {};
  std::uint64_t header_len = 0;
  if (size < sizeof(magic) + sizeof(header_len) + 4) return reject("the file is too short to hold a KV cache");
  read_at(0, magic, sizeof(magic));
  read_at(sizeof(magic), &header_len, sizeof(header_len));
  if (std::memcmp(magic, kMagic, sizeof(magic)) != 0) return reject("it is not a KV cache file of this program");
  if (header_len > kMaxHeaderBytes || size < sizeof(magic) + sizeof(header_len) + header_len + 4)
    return reject("its header is cut off");
  std::string header(header_len, '\0');
  read_at(sizeof(magic) + sizeof(header_len), header.data(), header.size());
  const nlohmann::json h = nlohmann::json::parse(header, nullptr, false);
  if (h.is_discarded() || !h.is_object()) return reject("its header is not JSON");
  std::int64_t n = 0;
  std::vector<std::int32_t> tokens;
  try {
    if (h.at("identity").get<std::string>() != identity)
      return reject("it was computed by another model, adapter, device or weights dtype");
    if (h.at("dtype").get<std::string>() != dtype_name(cache.dtype()))
      return reject(fmt::format("it holds a {} cache, this job keeps {} (runtime.kv_cache_dtype)",
                                h.at("dtype").get<std::string>(), dtype_name(cache.dtype())));
    const auto layers = h.at("layers").get<std::vector<std::int64_t>>();
    if (layers.size() != 2 || layers[0] != cache.layers().begin || layers[1] != cache.layers().count ||
        h.at("kv_heads").get<std::int64_t>() != cache.n_kv_heads() ||
        h.at("head_dim").get<std::int64_t>() != cache.head_dim())
      return reject("it holds other layers or KV heads (another parallel layout)");
    n = h.at("positions").get<std::int64_t>();
    tokens = h.at("tokens").get<std::vector<std::int32_t>>();
  } catch (const nlohmann::json::exception& e) {
    return reject(fmt::format("its header lacks a field ({})", e.what()));
  }
  if (n < 0 || static_cast<std::int64_t>(tokens.size()) != n) return reject("its header's token count is wrong");
  // Every position takes at least 2 · layers · heads · head_dim bytes: bounds n before the products below.
  if (static_cast<std::uint64_t>(n) > size / (2ull * static_cast<std::uint64_t>(cache.layers().count)))
    return reject(fmt::format("it has {} bytes, too few for {} positions", size, n));
  const std::size_t per_layer = cache.row_bytes(n);
  const std::uint64_t payload = 2ull * per_layer * static_cast<std::uint64_t>(cache.layers().count);
  if (size != sizeof(magic) + sizeof(header_len) + header_len + payload + 4)
    return reject(fmt::format("it has {} bytes where its header needs {}", size,
                              sizeof(magic) + sizeof(header_len) + header_len + payload + 4));
  // The longest shared prefix, leaving the prompt's last token to be prefilled (its logits pick the
  // next token).
  const std::int64_t limit = std::min<std::int64_t>(n, static_cast<std::int64_t>(prompt.size()) - 1);
  std::int64_t use = 0;
  while (use < limit && tokens[static_cast<std::size_t>(use)] == prompt[static_cast<std::size_t>(use)]) ++use;
  if (use == 0) return reject("its tokens do not start this prompt");
  if (use > cache.capacity()) use = cache.capacity();

  // The file mapped once (the descriptor's inode: a save's rename meanwhile does not change what is
  // mapped); the checksum first, over the whole file: the cache row is written only from a file that
  // verifies (a damaged file leaves the row as it was, which the generator may still reuse). The row is
  // then written from the mapping, whose pages the checksum has just read.
  MappedFile mapped;
  try {
    mapped = MappedFile(fd, file);
  } catch (const IoError& e) {
    return reject(fmt::format("it cannot be mapped ({})", e.what()));
  }
  if (mapped.size_bytes() != size) return reject("it changed while it was read");
  ::madvise(const_cast<std::uint8_t*>(mapped.data()), size, MADV_SEQUENTIAL);
  const auto* bytes = reinterpret_cast<const char*>(mapped.data());
  const std::uint64_t payload_at = sizeof(magic) + sizeof(header_len) + header_len;
  std::uint32_t stored = 0;
  std::memcpy(&stored, bytes + payload_at + payload, sizeof(stored));
  if (stored != crc32c(bytes, payload_at + payload)) return reject("its checksum does not match (the file is damaged)");
  // (heads, n, D) per layer in the file; the row takes (heads, use, D): with use < n, each head's first
  // `use` positions are gathered into a buffer first.
  std::vector<char> k(use < n ? cache.row_bytes(use) : 0), v(k.size());
  const std::size_t head_in = per_layer / static_cast<std::size_t>(cache.n_kv_heads());
  const std::size_t head_out = cache.row_bytes(use) / static_cast<std::size_t>(cache.n_kv_heads());
  const char* at = bytes + payload_at;
  for (int layer = cache.layers().begin; layer < cache.layers().end(); ++layer, at += 2 * per_layer) {
    const char* k_in = at;
    const char* v_in = at + per_layer;
    if (use < n) {
      for (std::int64_t head = 0; head < cache.n_kv_heads(); ++head) {
        std::memcpy(k.data() + head * head_out, k_in + head * head_in, head_out);
        std::memcpy(v.data() + head * head_out, v_in + head * head_in, head_out);
      }
      k_in = k.data();
      v_in = v.data();
    }
    cache.write_row(layer, row, use, k_in, v_in);
  }
  return {.positions = use, .why_not = {}};
}

}  // namespace adapt::generate
