// CUDA RoPE (kernels/rope.h) against ops::rope_* on the CPU: the cos/sin tables from the inverse
// frequencies of model::rope_inv_freq (default, linear and llama3 scaling, positions past the original
// context), by offset and by per-token positions (i32 and i64), then the rotation and its inverse on
// shared and per-sequence tables, f32, bf16 and f16, head dims 2, 14, 64, 128.
#if ADAPT_HAVE_CUDA
#include "kernels/rope.h"
#include "model/llama_config.h"
#include "ops/rope.h"
#include "tests/gpu/ops_gpu_util.h"

using namespace adapt;
using namespace adapt::test;

namespace {

std::vector<float> inv_freq_for(model::RopeType type, std::int64_t head_dim) {
  model::LlamaConfig cfg = model::llama_config_preset("tiny");
  cfg.head_dim = head_dim;
  cfg.rope_theta = 500000.0;
  cfg.rope_scaling = {};
  cfg.rope_scaling.type = type;
  if (type == model::RopeType::Linear) cfg.rope_scaling.factor = 4.0;
  if (type == model::RopeType::Llama3) {
    cfg.rope_scaling.factor = 8.0;
    cfg.rope_scaling.low_freq_factor = 1.0;
    cfg.rope_scaling.high_freq_factor = 4.0;
    cfg.rope_scaling.original_max_position_embeddings = 8192;
  }
  return model::rope_inv_freq(cfg);
}

const model::RopeType kTypes[] = {model::RopeType::Default, model::RopeType::Linear, model::RopeType::Llama3};
const std::int64_t kHeadDims[] = {2, 14, 64, 128};
const DType kDtypes[] = {DType::F32, DType::BF16, DType::F16};

}  // namespace

TEST_CASE("gpu.parity.rope tables from an offset and from per-token positions") {
  for (model::RopeType type : kTypes) {
    for (std::int64_t D : kHeadDims) {
      CAPTURE(model::rope_type_name(type));
      CAPTURE(D);
      const std::vector<float> inv = inv_freq_for(type, D);
      const auto half = static_cast<std::int64_t>(inv.size());
      REQUIRE(half == D / 2);
      DeviceBuffer d_inv = upload(inv, DType::F32);
      for (std::int64_t pos0 : {std::int64_t{0}, std::int64_t{131072 - 37}}) {
        const std::int64_t P = 37;
        Tensor C = Tensor::empty({P, half}, DType::F32, host_allocator(), "cos");
        Tensor S = Tensor::empty({P, half}, DType::F32, host_allocator(), "sin");
        ops::rope_table_fill(C, S, inv, pos0);
        DeviceBuffer dc(P * half * sizeof(float)), ds(P * half * sizeof(float));
        kernels::launch_rope_table_fill(dc.f32(), ds.f32(), d_inv.f32(), half, pos0, P, nullptr);
        check_close(download(dc, P * half, DType::F32), values(C), DType::F32, "cos table");
        check_close(download(ds, P * half, DType::F32), values(S), DType::F32, "sin table");
      }
      for (DType pdt : {DType::I32, DType::I64}) {
        const std::vector<std::int64_t> pos = {0, 1, 2, 0, 1, 5000, 9000, 131071, 3, 4, 65536};
        const auto n = static_cast<std::int64_t>(pos.size());
        Tensor P = host_ids({n}, pos, pdt, "positions");
        Tensor C = Tensor::empty({n, half}, DType::F32, host_allocator(), "cos");
        Tensor S = Tensor::empty({n, half}, DType::F32, host_allocator(), "sin");
        ops::rope_table_fill_positions(C, S, inv, P);
        DeviceBuffer d_pos = upload_ids(pos, pdt), dc(n * half * sizeof(float)), ds(n * half * sizeof(float));
        kernels::launch_rope_table_fill_positions(dc.f32(), ds.f32(), d_inv.f32(), half, d_pos.get(), pdt, n, nullptr);
        check_close(download(dc, n * half, DType::F32), values(C), DType::F32, "cos table by positions");
        check_close(download(ds, n * half, DType::F32), values(S), DType::F32, "sin table by positions");
      }
    }
  }
}

TEST_CASE("gpu.parity.rope forward and backward, shared and per-sequence tables") {
  const std::int64_t B = 2, T = 5, H = 3;
  for (model::RopeType type : kTypes) {
    for (std::int64_t D : kHeadDims) {
      for (bool per_sequence : {false, true}) {
        for (DType dt : kDtypes) {
          CAPTURE(model::rope_type_name(type));
          CAPTURE(D);
          CAPTURE(per_sequence);
          CAPTURE(dtype_name(dt));
          const std::vector<float> inv = inv_freq_for(type, D);
          const std::int64_t half = D / 2, n = B * T * H * D;
          Shape tshape = per_sequence ? Shape{B, T, half} : Shape{T, half};
          Tensor C = Tensor::empty(tshape, DType::F32, host_allocator(), "cos");
          Tensor S = Tensor::empty(tshape, DType::F32, host_allocator(), "sin");
          if (per_sequence) {
            const std::vector<std::int64_t> starts = {3, 20000};
            ops::rope_table_fill(C, S, inv, std::span<const std::int64_t>(starts));
          } else {
            ops::rope_table_fill(C, S, inv, 9000);
          }
          const std::vector<float> x = rounded(random_normal(n, 11), dt);
          Tensor X = host_f32({B, T, H, D}, x, "x");
          ops::rope_forward(X, C, S);
          Tensor G = host_f32({B, T, H, D}, x, "dx");
          ops::rope_backward(G, C, S);

          DeviceBuffer dc = upload(values(C), DType::F32), ds = upload(values(S), DType::F32);
          DeviceBuffer d_x = upload(x, dt), d_g = upload(x, dt);
          kernels::launch_rope_forward(d_x.get(), dc.f32(), ds.f32(), B, T, H, D, per_sequence, dt, nullptr);
          check_close(download(d_x, n, dt), rounded(values(X), dt), dt, "rope forward");
          kernels::launch_rope_backward(d_g.get(), dc.f32(), ds.f32(), B, T, H, D, per_sequence, dt, nullptr);
          check_close(download(d_g, n, dt), rounded(values(G), dt), dt, "rope backward");
          if (dt == DType::F32) {  // backward undoes forward
            kernels::launch_rope_backward(d_x.get(), dc.f32(), ds.f32(), B, T, H, D, per_sequence, dt, nullptr);
            check_close(download(d_x, n, dt), x, dt, "backward of forward");
          }
        }
      }
    }
  }
}
#endif  // ADAPT_HAVE_CUDA
