// CUDA embedding (kernels/embedding.h) against ops::embedding_forward / embedding_backward on the CPU:
// gather from f32, bf16 and f16 tables into f32, bf16 or f16 outputs with i32 and i64 ids, the
// scatter-add (bit for bit: the same order of additions), and the vocab-parallel split: ranks' outputs
// sum to the whole lookup, and each rank's dtable is its rows of the whole gradient.
#if ADAPT_HAVE_CUDA
#include "kernels/embedding.h"
#include "ops/embedding.h"
#include "tests/gpu/ops_gpu_util.h"

using namespace adapt;
using namespace adapt::test;

namespace {
std::vector<std::int64_t> random_ids(std::int64_t n, std::int64_t V, std::uint64_t salt) {
  std::mt19937_64 rng(kSeed ^ salt);
  std::uniform_int_distribution<std::int64_t> u(0, V - 1);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  for (auto& i : ids) i = u(rng);
  ids[0] = 0;
  ids[static_cast<std::size_t>(n - 1)] = V - 1;
  if (n > 3) ids[1] = ids[2];  // a repeated id: its rows add up in the backward
  return ids;
}
}  // namespace

TEST_CASE("gpu.parity.embedding forward and backward") {
  const std::int64_t V = 1000, n = 37;
  for (std::int64_t C : {1, 7, 33, 4096 + 3}) {
    for (DType table_dt : {DType::F32, DType::BF16, DType::F16}) {
      for (DType ids_dt : {DType::I32, DType::I64}) {
        CAPTURE(C);
        CAPTURE(dtype_name(table_dt));
        CAPTURE(dtype_name(ids_dt));
        const std::vector<float> table = rounded(random_normal(V * C, 31), table_dt);
        const std::vector<std::int64_t> ids = random_ids(n, V, 32);
        Tensor Tb = host_f32({V, C}, table, "table"), I = host_ids({n}, ids, ids_dt, "ids");
        Tensor O = Tensor::empty({n, C}, DType::F32, host_allocator(), "out");
        ops::embedding_forward(O, Tb, I);

        DeviceBuffer d_table = upload(table, table_dt), d_ids = upload_ids(ids, ids_dt);
        for (DType out_dt : {DType::F32, DType::BF16}) {
          CAPTURE(dtype_name(out_dt));
          DeviceBuffer d_out(n * C * dtype_size(out_dt));
          kernels::launch_embedding_forward(d_out.get(), out_dt, d_table.get(), table_dt, d_ids.get(), ids_dt, n, C, 0,
                                            V, nullptr);
          const std::vector<float> got = download(d_out, n * C, out_dt), want = rounded(values(O), out_dt);
          CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);  // a copy: exact
        }

        const std::vector<float> dout = random_normal(n * C, 33);
        Tensor DO = host_f32({n, C}, dout, "dout");
        const std::vector<float> dtable0 = random_normal(V * C, 34, 0.1f);
        Tensor DT = host_f32({V, C}, dtable0, "dtable");
        ops::embedding_backward(DT, DO, I);
        DeviceBuffer d_dout = upload(dout, DType::F32), d_dt = upload(dtable0, DType::F32);
        kernels::launch_embedding_backward(d_dt.f32(), d_dout.get(), DType::F32, d_ids.get(), ids_dt, n, C, 0, V,
                                           nullptr);
        const std::vector<float> got = download(d_dt, V * C, DType::F32), want = values(DT);
        CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);  // same order of additions
      }
    }
  }
}

TEST_CASE("gpu.parity.embedding vocab-parallel: ranks sum to the whole lookup") {
  const std::int64_t V = 1000, C = 33, n = 41;
  const std::int64_t bounds[] = {0, 333, 334, 1000};  // rank 1 holds one row
  const std::vector<float> table = random_normal(V * C, 41);
  const std::vector<std::int64_t> ids = random_ids(n, V, 42);
  Tensor Tb = host_f32({V, C}, table, "table"), I = host_ids({n}, ids, DType::I64, "ids");
  Tensor O = Tensor::empty({n, C}, DType::F32, host_allocator(), "out");
  ops::embedding_forward(O, Tb, I);
  const std::vector<float> dout = random_normal(n * C, 43);
  Tensor DT = Tensor::zeros({V, C}, DType::F32, "dtable");
  ops::embedding_backward(DT, host_f32({n, C}, dout, "dout"), I);

  DeviceBuffer d_ids = upload_ids(ids, DType::I64), d_dout = upload(dout, DType::F32);
  std::vector<float> sum(static_cast<std::size_t>(n * C), 0.0f);
  for (int rank = 0; rank < 3; ++rank) {
    CAPTURE(rank);
    const std::int64_t b = bounds[rank], count = bounds[rank + 1] - bounds[rank];
    const std::vector<float> shard(table.begin() + b * C, table.begin() + (b + count) * C);
    DeviceBuffer d_shard = upload(shard, DType::F32), d_out(n * C * sizeof(float));
    kernels::launch_embedding_forward(d_out.get(), DType::F32, d_shard.get(), DType::F32, d_ids.get(), DType::I64, n, C,
                                      b, count, nullptr);
    const std::vector<float> part = download(d_out, n * C, DType::F32);
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += part[i];

    DeviceBuffer d_dt(count * C * sizeof(float));
    kernels::launch_embedding_backward(d_dt.f32(), d_dout.get(), DType::F32, d_ids.get(), DType::I64, n, C, b, count,
                                       nullptr);
    const std::vector<float> got = download(d_dt, count * C, DType::F32);
    const std::vector<float> want(DT.data<float>() + b * C, DT.data<float>() + (b + count) * C);
    CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
  }
  const std::vector<float> want = values(O);
  CHECK(std::memcmp(sum.data(), want.data(), sum.size() * sizeof(float)) == 0);  // one rank non-zero per row
}
#endif  // ADAPT_HAVE_CUDA
