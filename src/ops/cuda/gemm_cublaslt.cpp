#include "ops/cuda/gemm_cublaslt.h"

#include <cublasLt.h>
#include <fmt/format.h>

#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_runtime.h"
#include "core/error.h"
#include "ops/op_checks.h"

namespace adapt::ops::cuda {
namespace {

namespace bc = adapt::backend::cuda;

#define ADAPT_CUBLASLT_CHECK(call, device, problem)                                                       \
  do {                                                                                                    \
    const cublasStatus_t adapt_st_ = (call);                                                              \
    if (adapt_st_ != CUBLAS_STATUS_SUCCESS) {                                                             \
      ADAPT_THROW(::adapt::CudaError, "{} failed on cuda:{}: {} ({}) for {}", #call, device,              \
                  cublasLtGetStatusName(adapt_st_), cublasLtGetStatusString(adapt_st_), (problem).str()); \
    }                                                                                                     \
  } while (0)

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: ADAPT_THROW(UnsupportedError, "cuBLASLt GEMM: dtype {} is not supported", dtype_name(t));
  }
}

struct Descriptors;

struct CachedAlgo {
  cublasLtMatmulAlgo_t algo;
  std::size_t workspace = 0;
  // The key's matmul descriptor and layouts, made once and reused by every later call with the key
  // (read-only there); null for GEMMs with a bias, whose descriptor holds the bias pointer of the call.
  std::shared_ptr<const Descriptors> descriptors;
};

// Per-process cuBLASLt state: one handle per device, one workspace per (device, stream), the
// algorithm cache. Never destroyed, like the device allocators it draws from.
struct LtState {
  std::mutex mutex;
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, backend::StreamId>, void*> workspaces;
  std::unordered_map<GemmKey, CachedAlgo, GemmKeyHash> algos;
  std::int64_t hits = 0, misses = 0;
};

LtState& state() {
  static LtState* s = new LtState;
  return *s;
}

// Descriptor owners: destroyed on every path, including the throwing ones.
struct DescDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* d) const { cublasLtMatmulDescDestroy(d); }
  void operator()(cublasLtMatrixLayoutOpaque_t* l) const { cublasLtMatrixLayoutDestroy(l); }
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, DescDeleter>;
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, DescDeleter>;
using Preference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, DescDeleter>;

Layout make_layout(const LtMatrix& m, std::int32_t batch, int device, const GemmProblem& p) {
  cublasLtMatrixLayout_t raw = nullptr;
  ADAPT_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&raw, cuda_type(m.dtype), m.rows, m.cols, m.ld), device, p);
  Layout layout(raw);
  if (batch > 1) {
    ADAPT_CUBLASLT_CHECK(
        cublasLtMatrixLayoutSetAttribute(raw, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)), device, p);
    const std::int64_t stride = m.batch_stride;
    ADAPT_CUBLASLT_CHECK(
        cublasLtMatrixLayoutSetAttribute(raw, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)),
        device, p);
  }
  return layout;
}

struct Descriptors {
  MatmulDesc op;
  Layout a, b, c;
};

// The matmul descriptor (compute type, transposes, the bias epilogue with this call's bias) and the
// three layouts of a GEMM.
std::shared_ptr<Descriptors> make_descriptors(const GemmProblem& p, const LtGemm& g, const void* bias, int device) {
  const cublasComputeType_t compute = p.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  cublasLtMatmulDesc_t raw_op = nullptr;
  ADAPT_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&raw_op, compute, CUDA_R_32F), device, p);
  auto d = std::make_shared<Descriptors>();
  d->op.reset(raw_op);
  const std::int32_t trans_a = g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const std::int32_t trans_b = g.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  ADAPT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(raw_op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)),
                       device, p);
  ADAPT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(raw_op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)),
                       device, p);
  if (p.bias) {
    // One bias vector (N values of C's dtype) for every matrix of the batch: BIAS_BATCH_STRIDE stays 0.
    const std::uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    ADAPT_CUBLASLT_CHECK(
        cublasLtMatmulDescSetAttribute(raw_op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)), device, p);
    ADAPT_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(raw_op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
                         device, p);
  }
  d->a = make_layout(g.a, g.batch, device, p);
  d->b = make_layout(g.b, g.batch, device, p);
  d->c = make_layout(g.c, g.batch, device, p);
  return d;
}

}  // namespace

void gemm(const GemmProblem& problem, float alpha, const void* a, const void* b, float beta, void* c, const void* bias,
          int device, cudaStream_t stream) {
  const GemmProblem p = with_packed_defaults(problem);
  const LtGemm g = lt_gemm_for(p);
  if (p.m == 0 || p.n == 0) return;
  ADAPT_REQUIRE(a && b && c && (!p.bias || bias), ShapeError, "{}: a null operand pointer", p.str());
  bc::DeviceGuard guard(device);
  LtState& st = state();

  // cuBLASLt's A is our B and its B is our A (gemm_cublaslt_layout.h).
  const GemmKey key = gemm_key(p, device, a, b, c, bias);
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  CachedAlgo chosen{};
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    auto h = st.handles.find(device);
    if (h == st.handles.end()) {
      ADAPT_CUBLASLT_CHECK(cublasLtCreate(&handle), device, p);
      h = st.handles.emplace(device, handle).first;
    }
    handle = h->second;
    const auto ws_key = std::make_pair(device, reinterpret_cast<backend::StreamId>(stream));
    auto w = st.workspaces.find(ws_key);
    if (w == st.workspaces.end()) {
      // Allocated for this stream, so the caching allocator reuses it only in this stream's order.
      void* mem = bc::device_allocator(device).allocate(kGemmWorkspaceBytes, ws_key.second);
      w = st.workspaces.emplace(ws_key, mem).first;
    }
    workspace = w->second;
    auto it = st.algos.find(key);
    if (it != st.algos.end()) {
      chosen = it->second;
      cached = true;
      ++st.hits;
    }
  }
  // Descriptors: the cached ones, or made for this call (and kept with the algorithm unless there is a bias).
  std::shared_ptr<const Descriptors> descriptors = chosen.descriptors;
  if (!descriptors) descriptors = make_descriptors(p, g, bias, device);
  cublasLtMatmulDesc_t raw_op = descriptors->op.get();
  const Layout& lt_a = descriptors->a;
  const Layout& lt_b = descriptors->b;
  const Layout& lt_c = descriptors->c;
  if (!cached) {
    cublasLtMatmulPreference_t raw_pref = nullptr;
    ADAPT_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&raw_pref), device, p);
    Preference pref(raw_pref);
    const std::uint64_t max_ws = kGemmWorkspaceBytes;
    ADAPT_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(raw_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                              &max_ws, sizeof(max_ws)),
                         device, p);
    // cuBLASLt's A is our B, its B our A; C and D are one matrix.
    const std::pair<cublasLtMatmulPreferenceAttributes_t, std::uint32_t> alignments[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c}};
    for (const auto& [attr, bytes] : alignments) {
      ADAPT_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(raw_pref, attr, &bytes, sizeof(bytes)), device, p);
    }
    constexpr int kRequested = 8;
    cublasLtMatmulHeuristicResult_t results[kRequested] = {};
    int n_results = 0;
    // No algorithm for this configuration comes back as CUBLAS_STATUS_NOT_SUPPORTED (or as success with
    // no result): both end in the UnsupportedError below, which names the operand alignments.
    const cublasStatus_t heuristic = cublasLtMatmulAlgoGetHeuristic(
        handle, raw_op, lt_a.get(), lt_b.get(), lt_c.get(), lt_c.get(), raw_pref, kRequested, results, &n_results);
    if (heuristic == CUBLAS_STATUS_NOT_SUPPORTED) {
      n_results = 0;
    } else if (heuristic != CUBLAS_STATUS_SUCCESS) {
      ADAPT_THROW(CudaError, "cublasLtMatmulAlgoGetHeuristic failed on cuda:{}: {} ({}) for {}", device,
                  cublasLtGetStatusName(heuristic), cublasLtGetStatusString(heuristic), p.str());
    }
    int pick = -1;
    for (int i = 0; i < n_results; ++i) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= kGemmWorkspaceBytes) {
        pick = i;
        break;
      }
    }
    ADAPT_REQUIRE(pick >= 0, UnsupportedError,
                  "cublasLtMatmulAlgoGetHeuristic found no algorithm on cuda:{} for {} (operand alignments A {} B {} "
                  "C {} bytes; {} candidate(s) returned)",
                  device, p.str(), key.align_a, key.align_b, key.align_c, n_results);
    chosen = CachedAlgo{results[pick].algo, results[pick].workspaceSize, p.bias ? nullptr : descriptors};
    std::lock_guard<std::mutex> lock(st.mutex);
    st.algos.emplace(key, chosen);
    ++st.misses;
  }

  // In place: C and D are the same matrix with the same layout.
  ADAPT_CUBLASLT_CHECK(cublasLtMatmul(handle, raw_op, &alpha, b, lt_a.get(), a, lt_b.get(), &beta, c, lt_c.get(), c,
                                      lt_c.get(), &chosen.algo, workspace, kGemmWorkspaceBytes, stream),
                       device, p);
}

GemmAlgoCacheStats gemm_algo_cache_stats() {
  LtState& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  return GemmAlgoCacheStats{st.algos.size(), st.hits, st.misses};
}

void gemm_algo_cache_clear() {
  LtState& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  st.algos.clear();
}

void matmul(Tensor& c, const Tensor& a, const Tensor& b, const MatmulOptions& opts, cudaStream_t stream,
            bool allow_tf32) {
  constexpr const char* op = "matmul";
  detail::require_same_device(op, c, {&a, &b});
  ADAPT_REQUIRE(c.device().kind == DeviceKind::Cuda, UnsupportedError,
                "ops::cuda::matmul: '{}' is on {}, not a CUDA device", c.name(), c.device().str());
  const detail::RawMatrixView A = detail::as_matrix_raw(op, a), B = detail::as_matrix_raw(op, b),
                              C = detail::as_matrix_raw(op, c);
  GemmProblem p;
  p.transpose_a = opts.transpose_a;
  p.transpose_b = opts.transpose_b;
  p.m = opts.transpose_a ? A.cols : A.rows;
  p.k = opts.transpose_a ? A.rows : A.cols;
  const std::int64_t kb = opts.transpose_b ? B.cols : B.rows;
  p.n = opts.transpose_b ? B.rows : B.cols;
  ADAPT_REQUIRE(p.k == kb, ShapeError,
                "matmul: inner dimensions differ: '{}' {}{} gives K = {} but '{}' {}{} gives K = {}", a.name(),
                a.shape().str(), opts.transpose_a ? "ᵀ" : "", p.k, b.name(), b.shape().str(),
                opts.transpose_b ? "ᵀ" : "", kb);
  ADAPT_REQUIRE(C.rows == p.m && C.cols == p.n, ShapeError,
                "matmul: output '{}' has shape {} ({} x {} as a matrix) but the product is {} x {}", c.name(),
                c.shape().str(), C.rows, C.cols, p.m, p.n);
  p.a_type = a.dtype();
  p.b_type = b.dtype();
  p.c_type = c.dtype();
  p.lda = A.ld;
  p.ldb = B.ld;
  p.ldc = C.ld;
  p.allow_tf32 = allow_tf32;
  gemm(p, opts.alpha, A.data, B.data, opts.beta, C.data, nullptr, c.device().index, stream);
}

}  // namespace adapt::ops::cuda
