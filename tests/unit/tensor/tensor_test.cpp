#include <doctest/doctest.h>

#include <numeric>

#include "tensor/tensor.h"

using namespace adapt;

TEST_CASE("shapes use int64 and catch overflow") {
  Shape s{128256, 16384};
  CHECK(s.numel() == 128256LL * 16384LL);
  CHECK(s.str() == "(128256, 16384)");
  CHECK(Shape{5}.str() == "(5,)");
  CHECK(Shape{}.numel() == 1);
  CHECK_THROWS_AS((Shape{1LL << 40, 1LL << 40}.numel()), ShapeError);
  CHECK_THROWS_AS(Shape({-1, 3}), ShapeError);
}

TEST_CASE("narrow gives row and column views without copying") {
  Tensor t = Tensor::empty({4, 6}, DType::F32, host_allocator(), "w");
  float* p = t.data<float>();
  std::iota(p, p + 24, 0.f);

  Tensor rows = t.narrow(0, 1, 2);  // rows 1..2: contiguous
  CHECK(rows.is_contiguous());
  CHECK(rows.data<float>()[0] == 6.f);
  CHECK(rows.data<float>() == p + 6);

  Tensor cols = t.narrow(1, 2, 3);  // columns 2..4: strided
  CHECK_FALSE(cols.is_contiguous());
  Tensor c = cols.to_host(DType::F32);
  CHECK(c.is_contiguous());
  CHECK(c.shape() == Shape{4, 3});
  const float want[] = {2, 3, 4, 8, 9, 10, 14, 15, 16, 20, 21, 22};
  for (int i = 0; i < 12; ++i) CHECK(c.data<float>()[i] == want[i]);

  CHECK_THROWS_WITH_AS(t.narrow(1, 4, 3), doctest::Contains("'w'"), ShapeError);
  CHECK_THROWS_AS(cols.reshape({12}), ShapeError);
  CHECK(rows.reshape({12}).shape() == Shape{12});
}

TEST_CASE("copies convert dtypes and check shapes") {
  Tensor a = Tensor::empty({3}, DType::F32);
  a.data<float>()[0] = 1.5f;
  a.data<float>()[1] = -0.25f;
  a.data<float>()[2] = 1e30f;
  Tensor b = a.to_host(DType::BF16);
  CHECK(b.dtype() == DType::BF16);
  CHECK(bf16_to_f32(b.data<bf16>()[0].bits) == 1.5f);
  Tensor c = b.to_host(DType::F32);
  CHECK(c.data<float>()[1] == -0.25f);
  CHECK_THROWS_AS(a.data<bf16>(), ShapeError);
  Tensor d = Tensor::zeros({4}, DType::F32);
  CHECK_THROWS_AS(d.copy_from(a), ShapeError);
  CHECK(d.data<float>()[3] == 0.f);
}

TEST_CASE("wrapped memory keeps its owner alive") {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4});
  Tensor t = Tensor::wrap(owner->data(), {2, 2}, DType::F32, Device{}, owner, "borrowed");
  std::weak_ptr<std::vector<float>> weak = owner;
  owner.reset();
  CHECK_FALSE(weak.expired());
  CHECK(t.data<float>()[3] == 4.f);
  t = Tensor();
  CHECK(weak.expired());
}
