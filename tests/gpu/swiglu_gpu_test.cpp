// CUDA SwiGLU (kernels/swiglu.h) against ops::swiglu_forward / swiglu_backward on the CPU, f32, bf16
// and f16, on sizes that are not multiples of the block, and the in-place backward (dgate over gate,
// dup over up).
#if ADAPT_HAVE_CUDA
#include "kernels/swiglu.h"
#include "ops/swiglu.h"
#include "tests/gpu/ops_gpu_util.h"

using namespace adapt;
using namespace adapt::test;

TEST_CASE("gpu.parity.swiglu forward and backward") {
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (std::int64_t cols : {1, 7, 33, 4096 + 3, 14336}) {
      for (std::int64_t rows : {1, 3, 70}) {
        CAPTURE(dtype_name(dt));
        CAPTURE(rows);
        CAPTURE(cols);
        const std::int64_t n = rows * cols;
        const std::vector<float> g = rounded(random_normal(n, 21, 3.0f), dt), u = rounded(random_normal(n, 22), dt);
        const std::vector<float> d = rounded(random_normal(n, 23), dt);
        Tensor G = host_f32({rows, cols}, g, "gate"), U = host_f32({rows, cols}, u, "up");
        Tensor D = host_f32({rows, cols}, d, "dout");
        Tensor O = Tensor::empty({rows, cols}, DType::F32, host_allocator(), "out");
        ops::swiglu_forward(O, G, U);
        Tensor DG = Tensor::empty({rows, cols}, DType::F32, host_allocator(), "dgate");
        Tensor DU = Tensor::empty({rows, cols}, DType::F32, host_allocator(), "dup");
        ops::swiglu_backward(DG, DU, D, G, U);

        DeviceBuffer dg = upload(g, dt), du = upload(u, dt), dd = upload(d, dt), dout(n * dtype_size(dt));
        kernels::launch_swiglu_forward(dout.get(), dg.get(), du.get(), n, dt, nullptr);
        check_close(download(dout, n, dt), rounded(values(O), dt), dt, "out");
        kernels::launch_swiglu_backward(dg.get(), du.get(), dd.get(), dg.get(), du.get(), n, dt, nullptr);
        check_close(download(dg, n, dt), rounded(values(DG), dt), dt, "dgate (in place of gate)");
        check_close(download(du, n, dt), rounded(values(DU), dt), dt, "dup (in place of up)");
      }
    }
  }
}
#endif  // ADAPT_HAVE_CUDA
