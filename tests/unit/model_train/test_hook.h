// A test adapter implementing model::AdapterHook in f32 with ops::matmul: a LoRA-like delta
// y += s·(x·Aᵀ)·Bᵀ at chosen linear sites (A and B both non-zero, so every gradient is exercised) and
// a block term out += h·Phᵀ + f·Pfᵀ + b at chosen sub-block ends (separate matrices for h and f, so
// swapping them is visible). It also checks the hook contract: forward calls in layer order, backward
// calls in reverse, and every backward receives bit for bit the x (h, f) of the latest forward of its
// site.
#pragma once

#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/adapter_hook.h"
#include "ops/matmul.h"
#include "tests/unit/ops/ops_test_util.h"

namespace adapt::test {

struct TestLora {
  float scale = 0.5f;
  Tensor A, B;    // (r, in), (out, r)
  Tensor dA, dB;  // gradients, accumulated
  Tensor last_x;  // the latest forward's x
};

struct TestBlock {
  Tensor Ph, Pf, b;     // (C, C), (C, C), (C)
  Tensor dPh, dPf, db;  // accumulated
  Tensor last_h, last_f;
};

inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

class TestHook : public model::AdapterHook {
 public:
  using Key = std::pair<int, int>;  // (layer, WeightKind or BlockSite)

  void add_lora(int layer, model::WeightKind kind, std::int64_t in, std::int64_t out, std::int64_t r,
                std::uint64_t salt) {
    TestLora& p = lora[{layer, static_cast<int>(kind)}];
    p.A = random_tensor({r, in}, salt, 0.2f, "lora_A");
    p.B = random_tensor({out, r}, salt + 1, 0.2f, "lora_B");
    p.dA = Tensor::zeros({r, in}, DType::F32, "dA");
    p.dB = Tensor::zeros({out, r}, DType::F32, "dB");
  }
  void add_block(int layer, model::BlockSite site, std::int64_t C, std::uint64_t salt) {
    TestBlock& p = blocks[{layer, static_cast<int>(site)}];
    p.Ph = random_tensor({C, C}, salt, 0.1f, "Ph");
    p.Pf = random_tensor({C, C}, salt + 1, 0.1f, "Pf");
    p.b = random_tensor({C}, salt + 2, 0.1f, "b");
    p.dPh = Tensor::zeros({C, C}, DType::F32, "dPh");
    p.dPf = Tensor::zeros({C, C}, DType::F32, "dPf");
    p.db = Tensor::zeros({C}, DType::F32, "db");
  }
  void zero_grads() {
    for (auto& [k, p] : lora) p.dA.zero(), p.dB.zero();
    for (auto& [k, p] : blocks) p.dPh.zero(), p.dPf.zero(), p.db.zero();
  }
  /// Every gradient tensor, in a fixed order (for comparisons between runs).
  std::vector<Tensor> grads() const {
    std::vector<Tensor> g;
    for (const auto& [k, p] : lora) g.insert(g.end(), {p.dA, p.dB});
    for (const auto& [k, p] : blocks) g.insert(g.end(), {p.dPh, p.dPf, p.db});
    return g;
  }

  bool has_linear(const model::LinearSite& site) const override {
    return lora.count({site.layer, static_cast<int>(site.kind)}) > 0;
  }
  void linear_forward(const model::LinearSite& site, const Tensor& x, Tensor& y) override {
    TestLora& p = lora.at({site.layer, static_cast<int>(site.kind)});
    log_event('F', site.layer);
    p.last_x = x.to_host(DType::F32);
    Tensor t = Tensor::empty({x.dim(0), p.A.dim(0)}, DType::F32);
    ops::matmul(t, x, p.A);                                                         // x·Aᵀ
    ops::matmul(y, t, p.B, {.transpose_b = true, .alpha = p.scale, .beta = 1.0f});  // y += s·t·Bᵀ
  }
  void linear_backward(const model::LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) override {
    TestLora& p = lora.at({site.layer, static_cast<int>(site.kind)});
    log_event('B', site.layer);
    if (!same_bits(x, p.last_x)) ++x_mismatches;
    Tensor u = Tensor::empty({x.dim(0), p.A.dim(0)}, DType::F32), t = Tensor::empty({x.dim(0), p.A.dim(0)}, DType::F32);
    ops::matmul(u, dy, p.B, {.transpose_b = false});  // dy·B
    ops::matmul(t, x, p.A);                           // x·Aᵀ
    ops::matmul(p.dA, u, x, {.transpose_a = true, .transpose_b = false, .alpha = p.scale, .beta = 1.0f});
    ops::matmul(p.dB, dy, t, {.transpose_a = true, .transpose_b = false, .alpha = p.scale, .beta = 1.0f});
    ops::matmul(dx, u, p.A, {.transpose_b = false, .alpha = p.scale, .beta = 1.0f});
  }

  bool has_block(int layer, model::BlockSite site) const override {
    return blocks.count({layer, static_cast<int>(site)}) > 0;
  }
  void block_forward(int layer, model::BlockSite site, const Tensor& h, const Tensor& f, Tensor& out) override {
    TestBlock& p = blocks.at({layer, static_cast<int>(site)});
    log_event('f', layer);
    p.last_h = h.to_host(DType::F32);
    p.last_f = f.to_host(DType::F32);
    ops::matmul(out, h, p.Ph, {.beta = 1.0f});
    ops::matmul(out, f, p.Pf, {.beta = 1.0f});
    ops::bias_add(out, p.b);
  }
  void block_backward(int layer, model::BlockSite site, const Tensor& h, const Tensor& f, const Tensor& dout,
                      Tensor& dh, Tensor& df) override {
    TestBlock& p = blocks.at({layer, static_cast<int>(site)});
    log_event('b', layer);
    if (!same_bits(h, p.last_h) || !same_bits(f, p.last_f)) ++x_mismatches;
    ops::matmul(p.dPh, dout, h, {.transpose_a = true, .transpose_b = false, .beta = 1.0f});
    ops::matmul(p.dPf, dout, f, {.transpose_a = true, .transpose_b = false, .beta = 1.0f});
    for (std::int64_t n = 0; n < dout.dim(0); ++n)
      for (std::int64_t c = 0; c < dout.dim(1); ++c) p.db.data<float>()[c] += dout.data<float>()[n * dout.dim(1) + c];
    ops::matmul(dh, dout, p.Ph, {.transpose_b = false, .beta = 1.0f});
    ops::matmul(df, dout, p.Pf, {.transpose_b = false, .beta = 1.0f});
  }

  std::map<Key, TestLora> lora;
  std::map<Key, TestBlock> blocks;
  int x_mismatches = 0;             // backward calls whose inputs differed from their forward's
  std::vector<std::string> events;  // "F0" forward of layer 0, "B1" backward of layer 1, ... (lm_head: -1)

 private:
  void log_event(char kind, int layer) {
    std::string e;
    e += kind;
    e += std::to_string(layer);
    events.push_back(e);
  }
};

}  // namespace adapt::test
