// Causal GQA attention on the CPU, flash-attention style. A task is (sequence b, KV head g, block of
// query positions); its rows are the block's positions times the n_rep query heads of g, so each key
// tile serves all of them. Per key tile: S = Q · Kᵀ · scale and O += P · V are two small products on
// the task's thread (gemm_serial: the packed AVX-512 or AVX2 kernel, or OpenBLAS), between them an
// online softmax keeps each row's running max m and sum l. Nothing of size T x S is ever allocated. A
// bf16 KV cache's tiles go to gemm_serial's bf16 overload, which takes their values exactly (the packed
// kernels read them in place): the same products as an f32 cache holding the same values. Decoding
// (T = 1) at head width 64 or 128 on a CPU with AVX-512 takes attention_decode_avx512.cpp instead (16
// keys per vector, no product call per tile). A long prefill on the packed AVX-512 kernels packs each key
// and value tile once for all the query blocks that read it (PackedTiles).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ops/cpu/attention_decode_avx512.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_avx512.h"
#include "ops/cpu/vec_math.h"

namespace adapt::ops::cpu {

namespace {

constexpr std::int64_t kKeyTile = 128;      // keys per tile
constexpr std::int64_t kRowsPerBlock = 64;  // query rows (positions x heads) per task, about

struct Scratch {
  std::vector<float> q;         // (rows, D) the block's queries, row r = (position r / n_rep, head r % n_rep)
  std::vector<float> q_packed;  // with PackedTiles: q packed once for the scores of every key tile
  std::vector<float> s;         // (rows, kKeyTile) scores, then probabilities
  std::vector<float> o;         // (rows, D) unnormalised outputs
  std::vector<float> m, l;
};

// Every key and value tile of one call, packed once for the tile products when the query blocks of a
// long prefill would each pack them again: at 8,192 tokens ~390 blocks read a sequence's first tile, and
// packing was 12% of the prefill. Tile j of (sequence b, KV head g) holds keys [j · kKeyTile,
// min((j + 1) · kKeyTile, key_end_b)), key_end_b = b's offset + T: the keys its last query block sees. A
// block whose visible keys end inside a tile packs that tile itself, as before (its k extent differs).
// Same panels, same bits.
class PackedTiles {
 public:
  static constexpr std::size_t kMaxBytes = std::size_t{512} << 20;  // one call's tiles, kept for the next call

  // The kernel to pack for (gemm_serial's, so that blocks packing their own tiles give the same bits), or
  // null: no packed kernel here, too few query blocks to share the tiles, or heads too wide for one packed
  // block (a Kᵀ tile is kKeyTile columns by D values of k, a V tile D columns by kKeyTile).
  static const PackedKernel* kernel_for(const AttentionArgs& a, std::int64_t blocks_per_sequence) {
    const PackedKernel* kernel = blocks_per_sequence >= 4 ? packed_kernel(a.bf16_products) : nullptr;
    const auto fits = [&](std::int64_t n, std::int64_t k) { return n <= kernel->max_n && k <= kernel->max_k; };
    return kernel != nullptr && fits(kKeyTile, a.D) && fits(a.D, kKeyTile) ? kernel : nullptr;
  }

  // Sizes the buffer for a (allocation-free once warm) and returns true; pack() then fills it. False,
  // allocating nothing, when the packed tiles would pass kMaxBytes (a long context on a wide batch:
  // 128k positions of 8 KV heads of width 128 take 1.2 GB in f32 panels per sequence); each block then
  // packs its tiles itself.
  bool plan(const AttentionArgs& a, const PackedKernel& kernel) {
    a_ = &a;
    kernel_ = &kernel;
    k_floats_ = kernel.b_floats(kKeyTile, a.D);  // Kᵀ tile: kKeyTile columns, k = D
    v_floats_ = kernel.b_floats(a.D, kKeyTile);  // V tile: D columns, k = kKeyTile
    n_tiles_ = 0;
    for (std::int64_t b = 0; b < a.B; ++b) n_tiles_ = std::max(n_tiles_, (key_end(b) + kKeyTile - 1) / kKeyTile);
    const std::size_t floats = static_cast<std::size_t>(a.B * a.Hkv * n_tiles_ * (k_floats_ + v_floats_));
    if (floats * sizeof(float) > kMaxBytes) return false;
    if (storage_.size() < floats + 16) storage_.resize(floats + 16);
    base_ = storage_.data();
    while (reinterpret_cast<std::uintptr_t>(base_) % 64 != 0) ++base_;  // the kernels' aligned panel loads
    return true;
  }
  const PackedKernel& kernel() const { return *kernel_; }
  std::int64_t n_jobs() const { return a_->B * a_->Hkv * n_tiles_; }

  // Packs tile `job` (of n_jobs(): sequence, KV head, tile).
  void pack(std::int64_t job) const {
    const AttentionArgs& a = *a_;
    const std::int64_t j = job % n_tiles_, bg = job / n_tiles_, b = bg / a.Hkv, g = bg % a.Hkv;
    const std::int64_t j0 = j * kKeyTile, n = std::min(kKeyTile, key_end(b) - j0);
    if (n <= 0) return;
    const std::int64_t kv_row = a.kv_rows ? a.kv_rows[b] : b;
    const std::int64_t k_at = kv_row * a.k_stride_b + g * a.k_stride_h + j0 * a.k_stride_s;
    const std::int64_t v_at = kv_row * a.v_stride_b + g * a.v_stride_h + j0 * a.v_stride_s;
    float* dst = base_ + job * (k_floats_ + v_floats_);
    const void* k = a.k_bf16 ? static_cast<const void*>(a.k_bf16 + k_at) : static_cast<const void*>(a.k + k_at);
    const void* v = a.v_bf16 ? static_cast<const void*>(a.v_bf16 + v_at) : static_cast<const void*>(a.v + v_at);
    kernel_->pack_b(true, n, a.D, k, a.k_bf16 != nullptr, a.k_stride_s, dst);
    kernel_->pack_b(false, a.D, n, v, a.v_bf16 != nullptr, a.v_stride_s, dst + k_floats_);
  }

  // The packed Kᵀ tile of (b, g) starting at key j0 when it holds exactly n keys, else null; its V tile
  // follows it at v_offset().
  const float* tile(std::int64_t b, std::int64_t g, std::int64_t j0, std::int64_t n) const {
    if (std::min(kKeyTile, key_end(b) - j0) != n) return nullptr;
    return base_ + ((b * a_->Hkv + g) * n_tiles_ + j0 / kKeyTile) * (k_floats_ + v_floats_);
  }
  std::int64_t v_offset() const { return k_floats_; }

 private:
  std::int64_t key_end(std::int64_t b) const {
    return (a_->q_pos_offsets ? a_->q_pos_offsets[b] : a_->q_pos_offset) + a_->T;
  }

  const AttentionArgs* a_ = nullptr;
  const PackedKernel* kernel_ = nullptr;
  std::vector<float> storage_;
  float* base_ = nullptr;
  std::int64_t k_floats_ = 0, v_floats_ = 0, n_tiles_ = 0;
};

// c (M, N) = alpha · a · op(tile) + beta · c, the tile rows [at, ...) in place in an f32 cache or, when
// `bf16` is set, a bf16 one.
void tile_product(const AttentionArgs& x, const float* f32, const std::uint16_t* bf16, std::int64_t at, bool trans_b,
                  std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a, std::int64_t lda,
                  std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  if (bf16) gemm_serial(false, trans_b, M, N, K, alpha, a, lda, bf16 + at, ldb, beta, c, ldc, x.bf16_products);
  else gemm_serial(false, trans_b, M, N, K, alpha, a, lda, f32 + at, ldb, beta, c, ldc, x.bf16_products);
}

void attend_block(const AttentionArgs& a, std::int64_t b, std::int64_t g, std::int64_t t0, std::int64_t t1,
                  const PackedTiles* packed, Scratch& sc) {
  const std::int64_t n_rep = a.H / a.Hkv, D = a.D, rows = (t1 - t0) * n_rep;
  sc.q.resize(static_cast<std::size_t>(rows * D));
  sc.s.resize(static_cast<std::size_t>(rows * kKeyTile));
  sc.o.assign(static_cast<std::size_t>(rows * D), 0.0f);
  sc.m.assign(static_cast<std::size_t>(rows), -std::numeric_limits<float>::infinity());
  sc.l.assign(static_cast<std::size_t>(rows), 0.0f);
  // Rows of one position are the n_rep consecutive heads of group g: one contiguous run per position.
  for (std::int64_t t = t0; t < t1; ++t) {
    const float* src = a.q + ((b * a.T + t) * a.H + g * n_rep) * D;
    std::copy_n(src, n_rep * D, sc.q.data() + (t - t0) * n_rep * D);
  }
  if (packed) {
    sc.q_packed.resize(static_cast<std::size_t>(packed->kernel().a_floats(rows, D)));
    packed->kernel().pack_a(rows, D, sc.q.data(), D, sc.q_packed.data());
  }
  // A ragged batch gives every sequence its own offset and cache row; the arithmetic below is the same
  // either way, so a sequence gets the same bits alone or batched.
  const std::int64_t offset = a.q_pos_offsets ? a.q_pos_offsets[b] : a.q_pos_offset;
  const std::int64_t kv_row = a.kv_rows ? a.kv_rows[b] : b;
  const std::int64_t k_off = kv_row * a.k_stride_b + g * a.k_stride_h, v_off = kv_row * a.v_stride_b + g * a.v_stride_h;
  const std::int64_t key_end = offset + t1;  // keys [0, key_end) are visible to some row
  for (std::int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
    const std::int64_t tile = std::min(kKeyTile, key_end - j0);
    // The tile's keys and values, in place in the cache.
    const std::int64_t k_at = k_off + j0 * a.k_stride_s, v_at = v_off + j0 * a.v_stride_s;
    const float* pk = packed ? packed->tile(b, g, j0, tile) : nullptr;  // this tile packed once for all
    if (pk) {
      packed->kernel().product(rows, tile, D, a.scale, sc.q.data(), D, sc.q_packed.data(), pk, 0.0f, sc.s.data(),
                               kKeyTile);
    } else {
      tile_product(a, a.k, a.k_bf16, k_at, true, rows, tile, D, a.scale, sc.q.data(), D, a.k_stride_s, 0.0f,
                   sc.s.data(), kKeyTile);
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      // Causal: the query at position offset + t sees keys 0 .. offset + t.
      const std::int64_t t = t0 + r / n_rep;
      const std::int64_t n = std::min(tile, offset + t + 1 - j0);
      softmax_step(sc.s.data() + r * kKeyTile, n, tile, &sc.m[static_cast<std::size_t>(r)],
                   &sc.l[static_cast<std::size_t>(r)], sc.o.data() + r * D, D);
    }
    if (pk) {
      packed->kernel().product(rows, D, tile, 1.0f, sc.s.data(), kKeyTile, nullptr, pk + packed->v_offset(), 1.0f,
                               sc.o.data(), D);
    } else {
      tile_product(a, a.v, a.v_bf16, v_at, false, rows, D, tile, 1.0f, sc.s.data(), kKeyTile, a.v_stride_s, 1.0f,
                   sc.o.data(), D);
    }
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t t = t0 + r / n_rep, h = g * n_rep + r % n_rep;
    const float l = sc.l[static_cast<std::size_t>(r)], inv_l = 1.0f / l;
    float* out = a.out + ((b * a.T + t) * a.H + h) * D;
    const float* o = sc.o.data() + r * D;
    for (std::int64_t d = 0; d < D; ++d) out[d] = o[d] * inv_l;
    if (a.lse) a.lse[(b * a.H + h) * a.T + t] = sc.m[static_cast<std::size_t>(r)] + std::log(l);
  }
}

}  // namespace

// Online-softmax step for one row with n visible scores out of `tile` (the rest are masked):
// m' = max(m, max s), p = e^(s − m'), l ← l · e^(m − m') + Σ p, o ← o · e^(m − m'). Masked entries get
// p = 0 exactly (the vectorised exp would give ~1e-38 for −inf).
ADAPT_CPU_KERNEL void softmax_step(float* s, std::int64_t n, std::int64_t tile, float* m, float* l, float* o,
                                   std::int64_t D) {
  if (n <= 0) {
    for (std::int64_t j = 0; j < tile; ++j) s[j] = 0.0f;
    return;
  }
  float tile_max = s[0];  // exact in any order: vectorised (a scalar max chain took ~40% of this step)
#pragma omp simd reduction(max : tile_max)
  for (std::int64_t j = 1; j < n; ++j) tile_max = s[j] > tile_max ? s[j] : tile_max;
  const float m_new = std::max(*m, tile_max);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t j = 0; j < n; ++j) {
    s[j] = exp_f32(s[j] - m_new);
    sum += s[j];
  }
  for (std::int64_t j = n; j < tile; ++j) s[j] = 0.0f;
  softmax_fold(m_new, sum, m, l, o, D);
}

ADAPT_CPU_KERNEL void softmax_fold(float m_new, float sum, float* m, float* l, float* o, std::int64_t D) {
  if (*l > 0.0f && m_new != *m) {
    const float corr = std::exp(*m - m_new);
#pragma omp simd
    for (std::int64_t d = 0; d < D; ++d) o[d] *= corr;
    *l *= corr;
  }
  *l += sum;
  *m = m_new;
}

#if !ADAPT_HAVE_X86_KERNELS
bool attention_decode_avx512_fits(const AttentionArgs&) { return false; }
void attention_decode_avx512(const AttentionArgs&, std::int64_t, std::int64_t) {}
#endif

void attention_forward(const AttentionArgs& a) {
  if (gemm_avx512_supported() && attention_decode_avx512_fits(a)) {
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < a.B * a.Hkv; ++task) attention_decode_avx512(a, task / a.Hkv, task % a.Hkv);
    return;
  }
  const std::int64_t n_rep = a.H / a.Hkv;
  const std::int64_t block = std::max<std::int64_t>(1, kRowsPerBlock / n_rep);  // positions per task
  const std::int64_t n_blocks = (a.T + block - 1) / block;
  const std::int64_t n_tasks = a.B * a.Hkv * n_blocks;
  thread_local PackedTiles packed_tiles;  // the calling thread's, reused across calls
  const PackedKernel* kernel = PackedTiles::kernel_for(a, n_blocks);
  const PackedTiles* packed = kernel && packed_tiles.plan(a, *kernel) ? &packed_tiles : nullptr;
#pragma omp parallel
  {
    thread_local Scratch sc;  // reused across calls: no allocation once warm
    if (packed) {
#pragma omp for schedule(dynamic, 4)
      for (std::int64_t job = 0; job < packed->n_jobs(); ++job) packed->pack(job);
    }
    // Later query blocks see more keys: hand them out first so the threads finish together.
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < n_tasks; ++task) {
      const std::int64_t qb = n_blocks - 1 - task / (a.B * a.Hkv);
      const std::int64_t bg = task % (a.B * a.Hkv);
      const std::int64_t t0 = qb * block, t1 = std::min(a.T, t0 + block);
      attend_block(a, bg / a.Hkv, bg % a.Hkv, t0, t1, packed, sc);
    }
  }
}

}  // namespace adapt::ops::cpu
