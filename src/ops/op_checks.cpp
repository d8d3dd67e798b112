#include "ops/op_checks.h"

#include "core/error.h"

namespace adapt::ops::detail {

bool on_cpu(const char* op, const Tensor& t) {
  if (t.device().host_accessible()) return true;
#if ADAPT_HAVE_CUDA
  ADAPT_THROW(UnsupportedError,
              "op '{}' has no CUDA implementation yet (tensor '{}' is on {}); run it on the CPU (runtime.device = "
              "\"cpu\") or copy the tensors to the host first",
              op, t.name(), t.device().str());
#else
  ADAPT_THROW(UnsupportedError,
              "op '{}' requested on device {}, but this binary was built with ADAPT_CUDA=OFF; rebuild with "
              "-DADAPT_CUDA=ON or set runtime.device = \"cpu\"",
              op, t.device().str());
#endif
}

void require_same_device(const char* op, const Tensor& first, std::initializer_list<const Tensor*> others) {
  for (const Tensor* t : others) {
    ADAPT_REQUIRE(t->device() == first.device(), UnsupportedError,
                  "op '{}': tensor '{}' is on {} but '{}' is on {}; copy them to one device first", op, t->name(),
                  t->device().str(), first.name(), first.device().str());
  }
}

void require_dtype(const char* op, const Tensor& t, DType dtype) {
  ADAPT_REQUIRE(t.dtype() == dtype, ShapeError,
                "op '{}': tensor '{}' has dtype {} but {} was expected; cast it first (ops::cast)", op, t.name(),
                dtype_name(t.dtype()), dtype_name(dtype));
}

void require_contiguous(const char* op, const Tensor& t) {
  ADAPT_REQUIRE(t.is_contiguous(), ShapeError,
                "op '{}': tensor '{}' {} must be contiguous; copy the view into a contiguous tensor first", op,
                t.name(), t.shape().str());
}

void require_shape(const char* op, const Tensor& t, const Shape& expected, const char* what) {
  ADAPT_REQUIRE(t.shape() == expected, ShapeError, "op '{}': tensor '{}' has shape {} but {} was expected ({})", op,
                t.name(), t.shape().str(), expected.str(), what);
}

MatrixView as_matrix(const char* op, const Tensor& t) {
  require_dtype(op, t, DType::F32);
  const RawMatrixView r = as_matrix_raw(op, t);
  return MatrixView{static_cast<float*>(r.data), r.rows, r.cols, r.ld};
}

RawMatrixView as_matrix_raw(const char* op, const Tensor& t) {
  ADAPT_REQUIRE(t.rank() >= 1, ShapeError, "op '{}': tensor '{}' is a scalar; a matrix (rows, cols) was expected", op,
                t.name());
  RawMatrixView m;
  m.data = t.raw();
  m.cols = t.dim(-1);
  m.rows = 1;
  for (int i = 0; i + 1 < t.rank(); ++i) m.rows *= t.dim(i);
  ADAPT_REQUIRE(m.cols <= 1 || t.stride(-1) == 1, ShapeError,
                "op '{}': tensor '{}' {} has stride {} along its last dimension; a unit stride is needed", op, t.name(),
                t.shape().str(), t.stride(-1));
  // Leading dimensions of size > 1 must nest: stride[outer] == stride[inner] * size[inner].
  m.ld = m.cols;
  std::int64_t expect = -1;  // stride the next outer dimension must have
  bool first = true;
  for (int i = t.rank() - 2; i >= 0; --i) {
    if (t.dim(i) == 1) continue;
    if (first) {
      m.ld = t.stride(i);
      first = false;
    } else {
      ADAPT_REQUIRE(t.stride(i) == expect, ShapeError,
                    "op '{}': tensor '{}' {} is a view whose leading dimensions do not share one row stride; copy it "
                    "into a contiguous tensor first",
                    op, t.name(), t.shape().str());
    }
    expect = t.stride(i) * t.dim(i);
  }
  ADAPT_REQUIRE(m.rows <= 1 || m.ld >= m.cols, ShapeError,
                "op '{}': tensor '{}' {} has overlapping rows (row stride {} < {} columns)", op, t.name(),
                t.shape().str(), m.ld, m.cols);
  return m;
}

}  // namespace adapt::ops::detail
