// The packed sgemms (ops/cpu/gemm_avx512: 8 x 48 tiles; ops/cpu/gemm_avx2: 6 x 16 tiles, a read in place)
// against a triple loop in double, element by element, with the rounding-error bound
// of a K-term f32 dot product: every transpose layout, alpha/beta (beta = 0 over NaN), bf16 b, row
// strides wider than the rows, sizes that are 1, tiny, odd, and not multiples of either tile, the 256 k
// block, the row blocks (64, 72) or the column blocks (768, 1536). Also: any split of c into row or
// column ranges gives the same bits (what cpu::gemm's thread split relies on), and
// bf16 b gives the bits of f32 b holding the same values. The few-rows kernel (ops/cpu/skinny_avx512) the same way,
// plus: a row gets the same bits alone as among up to 31 others (what makes batched decoding give each
// sequence its own logits); and its AVX2 counterpart (ops/cpu/skinny_avx2) with the rows cpu::gemm
// gives it (up to 8) and a few more. The bf16 dot-product kernel (ops/cpu/gemm_avx512_bf16) the same way
// against loops over op(a) rounded to bf16 (so a kernel that skipped the rounding fails: for small K the
// rounding moves a product far more than the f32 bound allows). Both packed kernels' pre-packed entries
// (op(b) and a packed once, for many products) give the bits of the call that packs them. Each skipped
// (with a message) on CPUs without its instructions.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <vector>

#include "dtype/dtype.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_avx2.h"
#include "ops/cpu/gemm_avx512.h"
#include "ops/cpu/gemm_avx512_bf16.h"
#include "ops/cpu/skinny_avx2.h"
#include "ops/cpu/skinny_avx512.h"
#include "tests/support/test_support.h"

using namespace adapt;

namespace {

constexpr double kUnitRoundoff = 0x1p-24;  // f32

bool kernel_available() {
  if (ops::cpu::gemm_avx512_supported()) return true;
  MESSAGE("this CPU has no AVX-512F/BW/VL: the packed kernel is not used here; skipped");
  return false;
}

// PackedBf16DotF32: the bf16 dot-product kernel with an f32 b, rounded like a; SerialBf16Copies: gemm_serial's
// bf16 products on CPUs without it (rounded copies through the f32 kernels; runs on any CPU).
enum class Kernel { Packed, PackedAvx2, PackedBf16Dot, PackedBf16DotF32, SerialBf16Copies, Skinny, SkinnyAvx2 };

// Whether the kernel rounds op(a) to bf16, and op(b) (f32 b).
bool rounds_a(Kernel k) {
  return k == Kernel::PackedBf16Dot || k == Kernel::PackedBf16DotF32 || k == Kernel::SerialBf16Copies;
}
bool rounds_b(Kernel k) { return k == Kernel::PackedBf16DotF32 || k == Kernel::SerialBf16Copies; }

bool available(Kernel kernel) {
  if (kernel == Kernel::Packed) return kernel_available();
  if (kernel == Kernel::SerialBf16Copies) return true;
  if (kernel == Kernel::PackedBf16Dot || kernel == Kernel::PackedBf16DotF32) {
    if (ops::cpu::gemm_avx512_bf16_supported()) return true;
    MESSAGE("this CPU has no AVX512_BF16: the bf16 dot-product kernel is not used here; skipped");
    return false;
  }
  if (ops::cpu::gemm_avx2_supported()) return true;
  MESSAGE("this CPU has no AVX2 with FMA: the AVX2 packed kernel is not used here; skipped");
  return false;
}

bool skinny_avx2_available() {
  if (ops::cpu::skinny_avx2_supported()) return true;
  MESSAGE("this CPU has no AVX2 with FMA: the AVX2 few-rows kernel is not used here; skipped");
  return false;
}

struct Problem {
  bool trans_a = false, trans_b = true, bf16 = false;
  Kernel kernel = Kernel::Packed;  // Skinny: trans_a = false, trans_b = true, M <= kSkinnyAvx512MaxRows
  std::int64_t M = 0, N = 0, K = 0;
  std::int64_t pad = 0;  // extra elements per stored row (row strides wider than the rows)
  float alpha = 1.0f, beta = 0.0f;
};

std::uint16_t to_bf16(float x) {  // round to nearest even
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return static_cast<std::uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

float from_bf16(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

// Operands of one product, stored as the layout says; b also in bf16 when asked (b then holds the
// bf16 values widened, so both copies hold the same numbers).
struct Operands {
  std::int64_t lda, ldb, ldc;
  std::vector<float> a, b, c0;
  std::vector<std::uint16_t> b16;

  Operands(const Problem& p, std::uint64_t salt) {
    std::mt19937_64 rng(test::kSeed ^ (salt * 0x9e3779b97f4a7c15ull));
    std::normal_distribution<float> dist(0.0f, 1.0f);
    const std::int64_t a_rows = p.trans_a ? p.K : p.M, a_cols = p.trans_a ? p.M : p.K;
    const std::int64_t b_rows = p.trans_b ? p.N : p.K, b_cols = p.trans_b ? p.K : p.N;
    lda = a_cols + p.pad;
    ldb = b_cols + p.pad;
    ldc = p.N + p.pad;
    a.assign(static_cast<std::size_t>(a_rows * lda), std::numeric_limits<float>::quiet_NaN());  // padding: NaN
    b.assign(static_cast<std::size_t>(b_rows * ldb), std::numeric_limits<float>::quiet_NaN());
    b16.assign(b.size(), 0x7FC0);  // bf16 NaN
    for (std::int64_t i = 0; i < a_rows; ++i)
      for (std::int64_t j = 0; j < a_cols; ++j) a[static_cast<std::size_t>(i * lda + j)] = dist(rng);
    for (std::int64_t i = 0; i < b_rows; ++i) {
      for (std::int64_t j = 0; j < b_cols; ++j) {
        const auto at = static_cast<std::size_t>(i * ldb + j);
        b[at] = dist(rng);
        if (p.bf16) {
          b16[at] = to_bf16(b[at]);
          b[at] = from_bf16(b16[at]);
        }
      }
    }
    c0.assign(static_cast<std::size_t>(p.M * ldc), std::numeric_limits<float>::quiet_NaN());
    if (p.beta != 0.0f) {
      for (std::int64_t i = 0; i < p.M; ++i)
        for (std::int64_t j = 0; j < p.N; ++j) c0[static_cast<std::size_t>(i * ldc + j)] = dist(rng);
    }
  }

  // op(a)[i][k] and op(b)[k][j] as the kernel multiplies them: rounded to bf16 where it rounds them.
  float a_at(const Problem& p, std::int64_t i, std::int64_t k) const {
    const float x = a[static_cast<std::size_t>(p.trans_a ? k * lda + i : i * lda + k)];
    return rounds_a(p.kernel) ? from_bf16(to_bf16(x)) : x;
  }
  float b_at(const Problem& p, std::int64_t k, std::int64_t j) const {
    const float x = b[static_cast<std::size_t>(p.trans_b ? j * ldb + k : k * ldb + j)];
    return rounds_b(p.kernel) ? from_bf16(to_bf16(x)) : x;
  }
};

// c = alpha · op(a) · op(b) + beta · c on rows [m0, m1) and columns [n0, n1) of the problem.
void run_kernel(const Problem& p, const Operands& o, std::vector<float>& c, std::int64_t m0, std::int64_t m1,
                std::int64_t n0, std::int64_t n1) {
  const float* a = o.a.data() + (p.trans_a ? m0 : m0 * o.lda);
  const std::int64_t b_offset = p.trans_b ? n0 * o.ldb : n0;
  const void* b = p.bf16 ? static_cast<const void*>(o.b16.data() + b_offset) : o.b.data() + b_offset;
  if (p.kernel == Kernel::PackedBf16Dot) {
    REQUIRE(p.bf16);
    ops::cpu::gemm_avx512_bf16(p.trans_a, p.trans_b, m1 - m0, n1 - n0, p.K, p.alpha, a, o.lda, o.b16.data() + b_offset,
                               o.ldb, p.beta, c.data() + m0 * o.ldc + n0, o.ldc);
    return;
  }
  if (p.kernel == Kernel::PackedBf16DotF32 || p.kernel == Kernel::SerialBf16Copies) {
    REQUIRE(!p.bf16);
    const auto gemm =
        p.kernel == Kernel::PackedBf16DotF32
            ? static_cast<void (*)(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*,
                                   std::int64_t, const float*, std::int64_t, float, float*, std::int64_t)>(
                  ops::cpu::gemm_avx512_bf16)
            : ops::cpu::gemm_serial_bf16_copies;
    gemm(p.trans_a, p.trans_b, m1 - m0, n1 - n0, p.K, p.alpha, a, o.lda, o.b.data() + b_offset, o.ldb, p.beta,
         c.data() + m0 * o.ldc + n0, o.ldc);
    return;
  }
  if (p.kernel == Kernel::PackedAvx2) {
    ops::cpu::gemm_avx2(p.trans_a, p.trans_b, m1 - m0, n1 - n0, p.K, p.alpha, a, o.lda, b, p.bf16, o.ldb, p.beta,
                        c.data() + m0 * o.ldc + n0, o.ldc);
    return;
  }
  if (p.kernel != Kernel::Packed) {
    // Its column range is [n_begin, n_end) of the whole weight, c indexed by whole columns.
    const void* w = p.bf16 ? static_cast<const void*>(o.b16.data()) : o.b.data();
    const auto skinny = p.kernel == Kernel::Skinny ? ops::cpu::skinny_avx512 : ops::cpu::skinny_avx2;
    skinny(c.data() + m0 * o.ldc, o.ldc, a, o.lda, m1 - m0, w, p.bf16, o.ldb, n0, n1, p.K, p.alpha, p.beta);
    return;
  }
  ops::cpu::gemm_avx512(p.trans_a, p.trans_b, m1 - m0, n1 - n0, p.K, p.alpha, a, o.lda, b, p.bf16, o.ldb, p.beta,
                        c.data() + m0 * o.ldc + n0, o.ldc);
}

// Every element within (K + 3) · u · (|alpha| Σ_k |a_ik b_kj| + |beta c_ij|) of the exact value: the
// bound of an f32 sum of K products in any order (one rounding per FMA), plus the alpha scaling, the
// beta product and the final add. A missing, doubled or misplaced term is ~|a b| ~ 1 away, far above.
void check_against_loops(const Problem& p, std::uint64_t salt) {
  CAPTURE(p.trans_a);
  CAPTURE(p.trans_b);
  CAPTURE(p.bf16);
  CAPTURE(static_cast<int>(p.kernel));
  CAPTURE(p.M);
  CAPTURE(p.N);
  CAPTURE(p.K);
  CAPTURE(p.pad);
  CAPTURE(p.alpha);
  CAPTURE(p.beta);
  const Operands o(p, salt);
  std::vector<float> c = o.c0;
  run_kernel(p, o, c, 0, p.M, 0, p.N);
  std::int64_t n_bad = 0;
  double worst = 0;  // largest error / bound
  for (std::int64_t i = 0; i < p.M; ++i) {
    for (std::int64_t j = 0; j < p.N; ++j) {
      double exact = 0, magnitude = 0;
      for (std::int64_t k = 0; k < p.K; ++k) {
        const double t = static_cast<double>(o.a_at(p, i, k)) * o.b_at(p, k, j);
        exact += t;
        magnitude += std::fabs(t);
      }
      const auto at = static_cast<std::size_t>(i * o.ldc + j);
      const double c0 = p.beta != 0.0f ? o.c0[at] : 0.0;
      exact = p.alpha * exact + p.beta * c0;
      const double bound =
          (static_cast<double>(p.K) + 3.0) * kUnitRoundoff * (std::fabs(p.alpha) * magnitude + std::fabs(p.beta * c0)) +
          1e-30;
      const double err = std::fabs(static_cast<double>(c[at]) - exact);
      if (!(err <= bound)) ++n_bad;  // NaN counts as bad
      worst = std::max(worst, std::isnan(err) ? INFINITY : err / bound);
    }
    // The padding of c is never written.
    for (std::int64_t j = p.N; j < o.ldc; ++j) CHECK(std::isnan(c[static_cast<std::size_t>(i * o.ldc + j)]));
  }
  CAPTURE(worst);
  CHECK(n_bad == 0);
}

}  // namespace

TEST_CASE(
    "packed sgemm: sizes around the tile, k block and column block, every layout, f32 and bf16 b; bf16 dot "
    "with bf16 and f32 b; rounded copies") {
  const std::int64_t Ms[] = {1, 2, 5, 6, 7, 8, 9, 13, 17};
  const std::int64_t Ns[] = {1, 5, 8, 9, 16, 17, 47, 48, 49, 97};
  const std::int64_t Ks[] = {1, 2, 3, 17, 33, 256, 257};
  for (const Kernel kernel : {Kernel::Packed, Kernel::PackedAvx2, Kernel::PackedBf16Dot, Kernel::PackedBf16DotF32,
                              Kernel::SerialBf16Copies}) {
    if (!available(kernel)) continue;
    std::uint64_t salt = 0;
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (bool bf16 : {false, true}) {
          if (kernel == Kernel::PackedBf16Dot && !bf16) continue;  // it multiplies bf16 weights only
          if (rounds_b(kernel) && bf16) continue;                  // f32 b, rounded as it is packed or copied
          for (std::int64_t M : Ms) {
            for (std::int64_t N : Ns) {
              for (std::int64_t K : Ks) {
                check_against_loops(
                    {.trans_a = ta, .trans_b = tb, .bf16 = bf16, .kernel = kernel, .M = M, .N = N, .K = K}, ++salt);
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("packed sgemm: several k, row and column blocks, alpha and beta, strided rows") {
  struct Case {
    std::int64_t M, N, K, pad;
    float alpha, beta;
  };
  // 769 and 1537 columns: one and two full 768-column blocks plus one column (and over the AVX2 kernel's
  // 1536); K = 513: two full 256 blocks plus one; 100, 33 and 130 rows: partial tiles and one or two full
  // 64- or 72-row blocks plus a partial one; beta = 0 over NaN in c.
  const Case cases[] = {{100, 769, 513, 0, 1.0f, 0.0f},
                        {33, 1537, 300, 3, 0.5f, 1.0f},
                        {64, 96, 64, 0, -2.0f, 0.25f},
                        {9, 50, 1000, 5, 1.0f, 1.0f},
                        {130, 770, 257, 1, 0.125f, -1.0f},
                        {17, 100, 1025, 2, 1.0f, 0.5f},  // the bf16 kernel's 512 k block: two and one value
                        {8, 48, 511, 0, 1.0f, 0.0f},
                        // one b panel (N <= 48): the f32 kernel reads op(a) in place, rows or columns of a
                        // strided a, across 64-row and 256-k blocks
                        {150, 40, 600, 3, 1.0f, 0.5f},
                        {77, 16, 257, 1, -1.0f, 0.0f}};
  for (const Kernel kernel : {Kernel::Packed, Kernel::PackedAvx2, Kernel::PackedBf16Dot, Kernel::PackedBf16DotF32,
                              Kernel::SerialBf16Copies}) {
    if (!available(kernel)) continue;
    std::uint64_t salt = 1000;
    for (const Case& k : cases) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          for (bool bf16 : {false, true}) {
            if (kernel == Kernel::PackedBf16Dot && !bf16) continue;
            if (rounds_b(kernel) && bf16) continue;
            check_against_loops({.trans_a = ta,
                                 .trans_b = tb,
                                 .bf16 = bf16,
                                 .kernel = kernel,
                                 .M = k.M,
                                 .N = k.N,
                                 .K = k.K,
                                 .pad = k.pad,
                                 .alpha = k.alpha,
                                 .beta = k.beta},
                                ++salt);
          }
        }
      }
    }
  }
}

TEST_CASE("packed sgemm: row and column splits at any offset give the bits of one call; bf16 b the bits of f32 b") {
  for (const Kernel kernel : {Kernel::Packed, Kernel::PackedAvx2, Kernel::PackedBf16Dot}) {
    if (!available(kernel)) continue;
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        CAPTURE(static_cast<int>(kernel));
        CAPTURE(ta);
        CAPTURE(tb);
        // 160 rows: three of the AVX2 kernel's 72-row blocks.
        // The bf16 dot kernel multiplies bf16 b only: its "f32" problem is the bf16 one.
        Problem p{.trans_a = ta,
                  .trans_b = tb,
                  .bf16 = kernel == Kernel::PackedBf16Dot,
                  .kernel = kernel,
                  .M = 160,
                  .N = 830,
                  .K = 520,
                  .alpha = 0.5f,
                  .beta = 1.0f};
        Problem p16 = p;
        p16.bf16 = true;
        const Operands o(p16, 77);  // bf16-representable b: the f32 problem reads the same values
        std::vector<float> whole = o.c0, by_cols = o.c0, by_rows = o.c0, whole16 = o.c0;
        run_kernel(p, o, whole, 0, p.M, 0, p.N);
        run_kernel(p16, o, whole16, 0, p.M, 0, p.N);
        // Cuts that are not multiples of either tile or of a column block.
        run_kernel(p, o, by_cols, 0, p.M, 0, 50);
        run_kernel(p, o, by_cols, 0, p.M, 50, 817);
        run_kernel(p, o, by_cols, 0, p.M, 817, p.N);
        run_kernel(p, o, by_rows, 0, 5, 0, p.N);
        run_kernel(p, o, by_rows, 5, 27, 0, p.N);
        run_kernel(p, o, by_rows, 27, p.M, 0, p.N);
        const std::size_t bytes = whole.size() * sizeof(float);
        CHECK(std::memcmp(whole.data(), by_cols.data(), bytes) == 0);
        CHECK(std::memcmp(whole.data(), by_rows.data(), bytes) == 0);
        CHECK(std::memcmp(whole.data(), whole16.data(), bytes) == 0);
      }
    }
  }
}

namespace {

// Each few-rows kernel against the double loops: M rows as given, K around the 16-element step, alpha
// and beta with strided rows (K = 33), f32 and bf16 w.
void check_skinny_against_loops(Kernel kernel, std::initializer_list<std::int64_t> Ms, std::uint64_t salt) {
  for (bool bf16 : {false, true}) {
    for (std::int64_t M : Ms) {
      for (std::int64_t K : {1, 7, 8, 15, 16, 17, 31, 33, 773}) {
        for (std::int64_t N : {1, 3, 37}) {
          Problem p{.bf16 = bf16, .kernel = kernel, .M = M, .N = N, .K = K};
          if (K == 33)
            p = {.bf16 = bf16, .kernel = kernel, .M = M, .N = N, .K = K, .pad = 5, .alpha = -0.75f, .beta = 0.5f};
          check_against_loops(p, ++salt);
        }
      }
    }
  }
}

// A row gets the same bits alone, among the others in groups of `groups` rows (summing to M), and in
// any column range; bf16 w gives the bits of f32 w holding the same values.
void check_skinny_bits(Kernel kernel, std::int64_t M, std::initializer_list<std::int64_t> groups_of) {
  for (std::int64_t K : {64, 250}) {
    CAPTURE(K);
    Problem p{.kernel = kernel, .M = M, .N = 203, .K = K, .pad = 3, .alpha = 0.5f, .beta = 1.0f};
    Problem p16 = p;
    p16.bf16 = true;
    const Operands o(p16, 91);  // bf16-representable w: the f32 problem reads the same values
    std::vector<float> whole = o.c0, whole16 = o.c0, alone = o.c0, groups = o.c0, by_cols = o.c0;
    run_kernel(p, o, whole, 0, p.M, 0, p.N);
    run_kernel(p16, o, whole16, 0, p.M, 0, p.N);
    for (std::int64_t m = 0; m < p.M; ++m) run_kernel(p, o, alone, m, m + 1, 0, p.N);
    std::int64_t m0 = 0;
    for (std::int64_t rows : groups_of) {
      run_kernel(p, o, groups, m0, m0 + rows, 0, p.N);
      m0 += rows;
    }
    REQUIRE(m0 == p.M);
    // Column cuts at odd offsets (the two-weight-row step then starts on odd columns and leaves a rest).
    run_kernel(p, o, by_cols, 0, p.M, 0, 7);
    run_kernel(p, o, by_cols, 0, p.M, 7, 150);
    run_kernel(p, o, by_cols, 0, p.M, 150, p.N);
    const std::size_t bytes = whole.size() * sizeof(float);
    CHECK(std::memcmp(whole.data(), alone.data(), bytes) == 0);
    CHECK(std::memcmp(whole.data(), groups.data(), bytes) == 0);
    CHECK(std::memcmp(whole.data(), by_cols.data(), bytes) == 0);
    CHECK(std::memcmp(whole.data(), whole16.data(), bytes) == 0);
  }
}

}  // namespace

TEST_CASE("few-rows kernel: 1-32 rows, K around the 16-element step, alpha and beta, strided rows, f32 and bf16") {
  if (!kernel_available()) return;
  check_skinny_against_loops(Kernel::Skinny, {1, 2, 3, 5, 8, 9, 17, 32}, 500);
}

TEST_CASE(
    "few-rows kernel: a row alone, among 31 others or in any column range gets the same bits; bf16 w those of f32") {
  if (!kernel_available()) return;
  // Groups of 3, 4 (one weight row per step), 5, 9 and 11 rows (two weight rows per step, groups of 8 + rest).
  check_skinny_bits(Kernel::Skinny, ops::cpu::kSkinnyAvx512MaxRows, {3, 4, 5, 9, 11});
}

TEST_CASE("AVX2 few-rows kernel: 1-11 rows, K around the 16-element step, alpha and beta, strided rows, f32 and bf16") {
  if (!skinny_avx2_available()) return;
  check_skinny_against_loops(Kernel::SkinnyAvx2, {1, 2, 3, 4, 5, 8, 11}, 700);
}

TEST_CASE("AVX2 few-rows kernel: a row gets the same bits alone, among 7 others, in any column range, from bf16 w") {
  if (!skinny_avx2_available()) return;
  check_skinny_bits(Kernel::SkinnyAvx2, 8, {3, 5});  // a group of 3; one of 4 and a rest of 1
}

// gemm_serial's bf16 overload (attention over a bf16 KV cache) takes b's values exactly: the bits of the f32
// overload on b widened, with f32 and with bf16 products, b stored (K, N) or (N, K), strided, beta 0 and 1.
// Runs on any CPU (whichever path gemm_serial takes there).
TEST_CASE("gemm_serial with bf16 b gives the bits of gemm_serial on b widened") {
  std::mt19937 rng(91);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const bool trans_b : {false, true}) {
    for (const bool bf16_products : {false, true}) {
      for (const float beta : {0.0f, 1.0f}) {
        CAPTURE(trans_b);
        CAPTURE(bf16_products);
        CAPTURE(beta);
        const std::int64_t M = 63, N = 70, K = 64, ldb = (trans_b ? K : N) + 5;
        const std::int64_t b_rows = trans_b ? N : K;
        std::vector<float> a(static_cast<std::size_t>(M * K)), c0(static_cast<std::size_t>(M * N));
        for (float& x : a) x = dist(rng);
        for (float& x : c0) x = dist(rng);
        std::vector<std::uint16_t> b16(static_cast<std::size_t>(b_rows * ldb));
        std::vector<float> bw(b16.size());
        for (std::size_t i = 0; i < b16.size(); ++i) {
          b16[i] = f32_to_bf16(dist(rng));
          bw[i] = bf16_to_f32(b16[i]);
        }
        std::vector<float> c16 = c0, cw = c0;
        ops::cpu::gemm_serial(false, trans_b, M, N, K, 0.125f, a.data(), K, b16.data(), ldb, beta, c16.data(), N,
                              bf16_products);
        ops::cpu::gemm_serial(false, trans_b, M, N, K, 0.125f, a.data(), K, bw.data(), ldb, beta, cw.data(), N,
                              bf16_products);
        CHECK(std::memcmp(c16.data(), cw.data(), c16.size() * sizeof(float)) == 0);
        CHECK(c16 != c0);
      }
    }
  }
}

// The packed kernels' pre-packed entries (attention packs each key and value tile once for all its query
// blocks): op(b) packed by gemm_avx512(_bf16)_pack_b and a by _pack_a give the bits of the call that packs
// them itself, for b stored (K, N) or (N, K), f32 or bf16, strided; N up to one column block, K up to one k
// block, few columns (the f32 kernel reads a in place there), beta 0 and 1; packed_a null too.
TEST_CASE("packed kernels: b and a packed once give the bits of the call that packs them") {
  if (!kernel_available()) return;
  const bool bf16_dot = ops::cpu::gemm_avx512_bf16_supported();
  if (!bf16_dot) MESSAGE("this CPU has no AVX512_BF16: the bf16 dot-product kernel's entries are not checked here");
  std::mt19937 rng(92);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  struct Shape {
    std::int64_t M, N, K;
  };
  for (const bool dot : {false, true}) {
    if (dot && !bf16_dot) continue;
    const std::int64_t max_k = dot ? ops::cpu::kGemmAvx512Bf16PackedMaxK : ops::cpu::kGemmAvx512PackedMaxK;
    for (const Shape s :
         {Shape{63, 128, 64}, Shape{17, 64, 128}, Shape{40, 33, 127}, Shape{9, 768, max_k}, Shape{70, 16, 5}}) {
      for (const bool trans_b : {false, true}) {
        for (const bool b_bf16 : {false, true}) {
          for (const float beta : {0.0f, 1.0f}) {
            CAPTURE(dot);
            CAPTURE(s.M);
            CAPTURE(s.N);
            CAPTURE(s.K);
            CAPTURE(trans_b);
            CAPTURE(b_bf16);
            const std::int64_t ldb = (trans_b ? s.K : s.N) + 3, b_rows = trans_b ? s.N : s.K;
            std::vector<float> a(static_cast<std::size_t>(s.M * s.K)), c0(static_cast<std::size_t>(s.M * s.N));
            std::vector<float> bf(static_cast<std::size_t>(b_rows * ldb));
            std::vector<std::uint16_t> bh(bf.size());
            for (float& x : a) x = dist(rng);
            for (float& x : c0) x = dist(rng);
            for (std::size_t i = 0; i < bf.size(); ++i) {
              bf[i] = dist(rng);
              bh[i] = f32_to_bf16(bf[i]);
            }
            const void* b = b_bf16 ? static_cast<const void*>(bh.data()) : static_cast<const void*>(bf.data());
            const std::int64_t b_floats = dot ? ops::cpu::gemm_avx512_bf16_packed_b_floats(s.N, s.K)
                                              : ops::cpu::gemm_avx512_packed_b_floats(s.N, s.K);
            const std::int64_t a_floats = dot ? ops::cpu::gemm_avx512_bf16_packed_a_floats(s.M, s.K)
                                              : ops::cpu::gemm_avx512_packed_a_floats(s.M, s.K);
            std::vector<float> b_store(static_cast<std::size_t>(b_floats + 16)), ap(static_cast<std::size_t>(a_floats));
            float* bp = b_store.data();
            while (reinterpret_cast<std::uintptr_t>(bp) % 64 != 0) ++bp;
            std::vector<float> ref = c0, with_a = c0, without_a = c0;
            if (dot) {
              if (b_bf16) {
                ops::cpu::gemm_avx512_bf16(false, trans_b, s.M, s.N, s.K, 0.5f, a.data(), s.K, bh.data(), ldb, beta,
                                           ref.data(), s.N);
              } else {
                ops::cpu::gemm_avx512_bf16(false, trans_b, s.M, s.N, s.K, 0.5f, a.data(), s.K, bf.data(), ldb, beta,
                                           ref.data(), s.N);
              }
              ops::cpu::gemm_avx512_bf16_pack_b(trans_b, s.N, s.K, b, b_bf16, ldb, bp);
              ops::cpu::gemm_avx512_bf16_pack_a(s.M, s.K, a.data(), s.K, ap.data());
              ops::cpu::gemm_avx512_bf16_packed(s.M, s.N, s.K, 0.5f, a.data(), s.K, ap.data(), bp, beta, with_a.data(),
                                                s.N);
              ops::cpu::gemm_avx512_bf16_packed(s.M, s.N, s.K, 0.5f, a.data(), s.K, nullptr, bp, beta, without_a.data(),
                                                s.N);
            } else {
              ops::cpu::gemm_avx512(false, trans_b, s.M, s.N, s.K, 0.5f, a.data(), s.K, b, b_bf16, ldb, beta,
                                    ref.data(), s.N);
              ops::cpu::gemm_avx512_pack_b(trans_b, s.N, s.K, b, b_bf16, ldb, bp);
              ops::cpu::gemm_avx512_pack_a(s.M, s.K, a.data(), s.K, ap.data());
              ops::cpu::gemm_avx512_packed(s.M, s.N, s.K, 0.5f, a.data(), s.K, ap.data(), bp, beta, with_a.data(), s.N);
              ops::cpu::gemm_avx512_packed(s.M, s.N, s.K, 0.5f, a.data(), s.K, nullptr, bp, beta, without_a.data(),
                                           s.N);
            }
            CHECK(ref != c0);
            CHECK(std::memcmp(ref.data(), with_a.data(), ref.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(ref.data(), without_a.data(), ref.size() * sizeof(float)) == 0);
          }
        }
      }
    }
  }
}
