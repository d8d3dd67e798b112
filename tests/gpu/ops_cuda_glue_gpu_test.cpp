// The CUDA glue of the row ops (src/ops/cuda/*_cuda.h) on device tensors against the CPU ops: one
// shape each, through the checks and the launchers, plus the errors the glue raises before a launch
// (an id outside the vocabulary, a target that is neither valid nor ignored, a dtype mismatch).
#if ADAPT_HAVE_CUDA
#include "backend/backend.h"
#include "ops/cross_entropy.h"
#include "ops/cuda/cross_entropy_cuda.h"
#include "ops/cuda/embedding_cuda.h"
#include "ops/cuda/rms_norm_cuda.h"
#include "ops/cuda/swiglu_cuda.h"
#include "ops/embedding.h"
#include "ops/rms_norm.h"
#include "ops/swiglu.h"
#include "tests/gpu/gpu_tensors.h"
#include "tests/gpu/ops_gpu_util.h"

using namespace adapt;
using namespace adapt::test;

TEST_CASE("gpu.ops_cuda glue: rms_norm, swiglu, embedding, cross_entropy against the CPU") {
  const std::int64_t B = 3, T = 5, C = 4096 + 3, V = 1000;
  Tensor x = host_f32({B, T, C}, random_normal(B * T * C, 81), "x");
  Tensor w = host_f32({C}, random_normal(C, 82), "w");
  Tensor y = Tensor::empty({B, T, C}, DType::F32, host_allocator(), "y");
  Tensor r = Tensor::empty({B * T}, DType::F32, host_allocator(), "rstd");
  ops::rms_norm_forward(y, x, w, 1e-6f, &r);
  Tensor dx = to_device(x), dw = to_device(w), dy = to_device(y), dr = to_device(r);
  ops::cuda::rms_norm_forward(dy, dx, dw, 1e-6f, &dr);
  check_close(values(to_cpu(dy)), values(y), DType::F32, "rms_norm y");
  check_close(values(to_cpu(dr)), values(r), DType::F32, "rms_norm rstd");

  Tensor g = host_f32({B, T, C}, random_normal(B * T * C, 83), "gate");
  Tensor o = Tensor::empty({B, T, C}, DType::F32, host_allocator(), "out");
  ops::swiglu_forward(o, g, x);
  Tensor dg = to_device(g), dout = Tensor::empty({B, T, C}, DType::F32, backend::cuda_allocator(0), "out");
  ops::cuda::swiglu_forward(dout, dg, dx);
  check_close(values(to_cpu(dout)), values(o), DType::F32, "swiglu");

  std::vector<std::int64_t> id_values(B * T);
  for (std::int64_t i = 0; i < B * T; ++i) id_values[i] = (i * 37) % V;
  Tensor ids = host_ids({B, T}, id_values, DType::I64, "ids");
  Tensor table = host_f32({V, 33}, random_normal(V * 33, 84), "table");
  Tensor e = Tensor::empty({B, T, 33}, DType::F32, host_allocator(), "e");
  ops::embedding_forward(e, table, ids);
  Tensor de = Tensor::empty({B, T, 33}, DType::F32, backend::cuda_allocator(0), "e");
  Tensor dids = to_device(ids), dtable = to_device(table);
  ops::cuda::embedding_forward(de, dtable, dids);
  check_close(values(to_cpu(de)), values(e), DType::F32, "embedding");

  std::vector<std::int64_t> t_values(B * T);
  for (std::int64_t i = 0; i < B * T; ++i) t_values[i] = i == 4 ? -100 : (i * 101) % V;
  Tensor targets = host_ids({B * T}, t_values, DType::I32, "targets");
  Tensor logits = host_f32({B * T, V}, random_normal(B * T * V, 85, 2.0f), "logits");
  Tensor dlogits = to_device(logits), dtargets = to_device(targets);
  ops::CrossEntropyOptions opts;
  opts.grad_scale = 1.0f / 14;
  const ops::CrossEntropyResult want = ops::cross_entropy_forward_backward(logits, targets, opts);
  const ops::CrossEntropyResult got = ops::cuda::cross_entropy_forward_backward(dlogits, dtargets, opts, nullptr);
  CHECK(got.n_valid == want.n_valid);
  CHECK(std::fabs(got.loss_sum - want.loss_sum) <= kTolF32 * std::fabs(want.loss_sum));
  check_close(values(to_cpu(dlogits)), values(logits), DType::F32, "cross-entropy gradient");
}

TEST_CASE("gpu.ops_cuda glue rejects bad ids, targets and dtypes before launching") {
  Tensor table = to_device(host_f32({10, 4}, random_normal(40, 91), "table"));
  Tensor out = Tensor::empty({2, 4}, DType::F32, backend::cuda_allocator(0), "out");
  Tensor bad_ids = to_device(host_ids({2}, {3, 10}, DType::I32, "ids"));
  CHECK_THROWS_WITH_AS(ops::cuda::embedding_forward(out, table, bad_ids), doctest::Contains("outside the vocabulary"),
                       ShapeError);
  Tensor logits = to_device(host_f32({2, 10}, random_normal(20, 92), "logits"));
  Tensor bad_targets = to_device(host_ids({2}, {-100, 11}, DType::I64, "targets"));
  CHECK_THROWS_WITH_AS(ops::cuda::cross_entropy_forward_backward(logits, bad_targets, {}, nullptr),
                       doctest::Contains("ignore index"), ShapeError);
  Tensor x16 = Tensor::empty({2, 4}, DType::BF16, backend::cuda_allocator(0), "x16");
  Tensor w = to_device(host_f32({4}, random_normal(4, 93), "w"));
  CHECK_THROWS_AS(ops::cuda::rms_norm_forward(out, x16, w, 1e-6f, nullptr), ShapeError);  // y f32, x bf16
}
#endif  // ADAPT_HAVE_CUDA
