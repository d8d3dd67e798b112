#include "parallel/tp_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "ops/matmul.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/cross_entropy_cuda.h"
#include "ops/cuda/embedding_cuda.h"
#endif

namespace adapt::parallel {

namespace {

void require_f32(const char* op, const Tensor& t) {
  ADAPT_REQUIRE(t.defined() && t.is_contiguous() && t.dtype() == DType::F32, ShapeError,
                "{}: tensor '{}' must be a contiguous f32 tensor (got {}{})", op, t.name(), dtype_name(t.dtype()),
                t.defined() && !t.is_contiguous() ? ", not contiguous" : "");
}

bool on_device(const Tensor& t) { return !t.device().host_accessible(); }

Allocator& allocator_of(Device d) { return d.host_accessible() ? host_allocator() : backend::cuda_allocator(d.index); }

// `t` (contiguous) on `device`: t itself when it is there already, else a synchronous copy.
Tensor moved_to(const Tensor& t, Device device) {
  if (t.device() == device || (t.device().host_accessible() && device.host_accessible())) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), allocator_of(device), t.name());
  backend::copy(out, t);
  return out;
}

#if !ADAPT_HAVE_CUDA
[[noreturn]] void no_cuda(const char* op, const Tensor& t) {
  ADAPT_THROW(UnsupportedError,
              "{}: tensor '{}' is on {}, but this binary was built without CUDA; rebuild with "
              "-DADAPT_CUDA=ON",
              op, t.name(), t.device().str());
}
#endif

std::int64_t id_at(const Tensor& ids, std::int64_t i) {
  return ids.dtype() == DType::I32 ? ids.data<std::int32_t>()[i] : ids.data<std::int64_t>()[i];
}

void require_ids(const char* op, const Tensor& ids, std::int64_t n) {
  ADAPT_REQUIRE((ids.dtype() == DType::I32 || ids.dtype() == DType::I64) && ids.is_contiguous() && ids.numel() == n,
                ShapeError, "{}: '{}' {} {} must be contiguous i32 or i64 with {} entries (one per row)", op,
                ids.name(), ids.shape().str(), dtype_name(ids.dtype()), n);
}

}  // namespace

void tp_linear_forward(Tensor& y, const Tensor& x, const Tensor& w_local, ShardDim split, comm::Communicator& tp) {
  ADAPT_CHECK(split != ShardDim::None, "tp_linear_forward of a replicated weight '{}'", w_local.name());
  ops::matmul(y, x, w_local);
  if (split == ShardDim::Cols && tp.size() > 1) {
    require_f32("tp_linear_forward", y);
    tp.all_reduce(y, comm::ReduceOp::Sum);
  }
}

void tp_linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w_local, ShardDim split,
                              comm::Communicator& tp) {
  ADAPT_CHECK(split != ShardDim::None, "tp_linear_backward_input of a replicated weight '{}'", w_local.name());
  ops::matmul(dx, dy, w_local, {.transpose_b = false});
  if (split == ShardDim::Rows && tp.size() > 1) {
    require_f32("tp_linear_backward_input", dx);
    tp.all_reduce(dx, comm::ReduceOp::Sum);
  }
}

void vocab_parallel_embedding_forward(Tensor& out, const Tensor& table_shard, const Range& vocab,
                                      std::int64_t vocab_size, const Tensor& ids, comm::Communicator& tp) {
  constexpr const char* op = "vocab_parallel_embedding_forward";
  require_f32(op, out);
  const std::int64_t C = table_shard.dim(1), n = ids.numel();
  ADAPT_REQUIRE(table_shard.rank() == 2 && table_shard.dim(0) == vocab.count && table_shard.is_contiguous() &&
                    out.numel() == n * C,
                ShapeError,
                "{}: table shard '{}' {} must be ({}, C) for vocabulary rows [{}, {}), out '{}' {} must hold "
                "{} rows of C",
                op, table_shard.name(), table_shard.shape().str(), vocab.count, vocab.begin, vocab.end(), out.name(),
                out.shape().str(), n);
  ADAPT_REQUIRE(table_shard.device() == out.device(), ShapeError,
                "{}: table shard '{}' is on {} but the output '{}' on {}; keep both on the model's device", op,
                table_shard.name(), table_shard.device().str(), out.name(), out.device().str());
  require_ids(op, ids, n);
  const Tensor ids_host = moved_to(ids, Device{});  // checked on the host, before any collective
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t id = id_at(ids_host, i);
    ADAPT_REQUIRE(id >= 0 && id < vocab_size, ShapeError,
                  "{}: id {} at position {} of '{}' is outside the vocabulary "
                  "[0, {})",
                  op, id, i, ids.name(), vocab_size);
  }
  if (on_device(out)) {
#if ADAPT_HAVE_CUDA
    // The rank's rows looked up, zero rows for the ids another rank holds (kernels/embedding.h).
    Tensor rows = out.reshape({n, C});
    ops::cuda::embedding_forward(rows, table_shard, moved_to(ids, out.device()).reshape({n}), vocab.begin, vocab_size);
#else
    no_cuda(op, out);
#endif
  } else {
    float* o = out.data<float>();
    const std::size_t row_bytes = static_cast<std::size_t>(C) * dtype_size(table_shard.dtype());
    const auto* table = static_cast<const unsigned char*>(table_shard.raw());
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t id = id_at(ids_host, i);
      if (id >= vocab.begin && id < vocab.end()) {
        dtype_convert(o + i * C, DType::F32, table + static_cast<std::size_t>(id - vocab.begin) * row_bytes,
                      table_shard.dtype(), C);
      } else {
        std::fill_n(o + i * C, C, 0.0f);
      }
    }
  }
  tp.all_reduce(out, comm::ReduceOp::Sum);
}

ops::CrossEntropyResult vocab_parallel_cross_entropy(Tensor& logits, const Tensor& targets, const Range& vocab,
                                                     std::int64_t vocab_size, comm::Communicator& tp,
                                                     const ops::CrossEntropyOptions& opts) {
  constexpr const char* op = "vocab_parallel_cross_entropy";
  require_f32(op, logits);
  ADAPT_REQUIRE(logits.rank() >= 1 && logits.dim(-1) == vocab.count, ShapeError,
                "{}: logits '{}' {} must end in the {} vocabulary entries [{}, {}) of this rank", op, logits.name(),
                logits.shape().str(), vocab.count, vocab.begin, vocab.end());
  const std::int64_t V = vocab.count, rows = logits.numel() / std::max<std::int64_t>(V, 1);
  require_ids(op, targets, rows);
  const Tensor targets_host = moved_to(targets, Device{});  // checked on the host, before any collective
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t y = id_at(targets_host, r);
    ADAPT_REQUIRE(y == opts.ignore_index || (y >= 0 && y < vocab_size), ShapeError,
                  "{}: target {} of row {} in '{}' is outside the vocabulary [0, {}) and is not the ignore index {}",
                  op, y, r, targets.name(), vocab_size, opts.ignore_index);
  }
  if (on_device(logits)) {
#if ADAPT_HAVE_CUDA
    // The same three all-reduces on device buffers (kernels/cross_entropy.h), in f32.
    const Device dev = logits.device();
    Allocator& alloc = allocator_of(dev);
    const Tensor targets_dev = moved_to(targets, dev).reshape({rows});
    Tensor z = logits.reshape({rows, V});
    Tensor row_max = Tensor::empty({rows}, DType::F32, alloc, "vocab_ce.row_max");
    Tensor sum_exp = Tensor::empty({rows}, DType::F32, alloc, "vocab_ce.sum_exp");
    Tensor target_logit = Tensor::empty({rows}, DType::F32, alloc, "vocab_ce.target_logit");
    Tensor row_loss = Tensor::empty({rows}, DType::F32, alloc, "vocab_ce.row_loss");
    ops::cuda::cross_entropy_row_max(row_max, z);
    tp.all_reduce(row_max, comm::ReduceOp::Max);
    ops::cuda::cross_entropy_sum_exp(sum_exp, target_logit, z, row_max, targets_dev, vocab.begin);
    tp.all_reduce(sum_exp, comm::ReduceOp::Sum);
    tp.all_reduce(target_logit, comm::ReduceOp::Sum);
    ops::cuda::cross_entropy_finish(z, &row_loss, row_max, sum_exp, target_logit, targets_dev, vocab.begin, opts);
    const Tensor loss_host = moved_to(row_loss, Device{});
    const float* loss = loss_host.data<float>();
    ops::CrossEntropyResult res;
    for (std::int64_t r = 0; r < rows; ++r) {  // in row order, in double, as the CPU's loss sum
      if (id_at(targets_host, r) == opts.ignore_index) continue;
      res.loss_sum += static_cast<double>(loss[r]);
      ++res.n_valid;
    }
    return res;
#else
    no_cuda(op, logits);
#endif
  }
  const Tensor& targets_h = targets_host;
  float* z = logits.data<float>();
  const auto rows_u = static_cast<std::size_t>(rows);
  // 1. The row maxima over the whole vocabulary.
  std::vector<float> m(rows_u, -std::numeric_limits<float>::infinity());
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t j = 0; j < V; ++j) m[r] = std::max(m[r], z[r * V + j]);
  }
  tp.all_reduce(std::span<float>(m), comm::ReduceOp::Max);
  // 2. Σ exp(z − max) and the target's logit (held by one rank; the others add 0).
  std::vector<double> sum(rows_u, 0.0), z_y(rows_u, 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t j = 0; j < V; ++j) sum[r] += std::exp(z[r * V + j] - m[r]);
    const std::int64_t y = id_at(targets_h, r);
    if (y >= vocab.begin && y < vocab.end()) z_y[r] = z[r * V + (y - vocab.begin)];
  }
  tp.all_reduce(std::span<double>(sum), comm::ReduceOp::Sum);
  tp.all_reduce(std::span<double>(z_y), comm::ReduceOp::Sum);
  // 3. −log p_y = log Σ exp(z − m) + m − z_y, and the local slice of the gradient.
  ops::CrossEntropyResult res;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t y = id_at(targets_h, r);
    float* zr = z + r * V;
    if (y == opts.ignore_index) {
      if (opts.grad) std::fill_n(zr, V, 0.0f);
      continue;
    }
    res.loss_sum += std::log(sum[r]) + static_cast<double>(m[r]) - z_y[r];
    ++res.n_valid;
    if (!opts.grad) continue;
    const float k = static_cast<float>(static_cast<double>(opts.grad_scale) / sum[r]);
    for (std::int64_t j = 0; j < V; ++j) zr[j] = std::exp(zr[j] - m[r]) * k;
    if (y >= vocab.begin && y < vocab.end()) zr[y - vocab.begin] -= opts.grad_scale;
  }
  return res;
}

Tensor shard_take(const Tensor& full, const TensorSlice& slice) {
  ADAPT_REQUIRE(full.shape() == slice.global, ShapeError, "shard_take: '{}' has shape {} but the slice is of {}",
                full.name(), full.shape().str(), slice.global.str());
  Tensor part = full;
  if (slice.dim != ShardDim::None) {
    part = full.narrow(slice.dim == ShardDim::Rows ? 0 : full.rank() - 1, slice.range.begin, slice.range.count);
  }
  Tensor out = Tensor::empty(part.shape(), full.dtype(), host_allocator(), full.name());
  out.copy_from(part);
  return out;
}

void tp_gather(Tensor& full, const Tensor& local, ShardDim dim, comm::Communicator& tp) {
  constexpr const char* op = "tp_gather";
  require_f32(op, full);
  require_f32(op, local);
  ADAPT_CHECK(dim != ShardDim::None, "tp_gather of a replicated tensor '{}'", local.name());
  const int axis = dim == ShardDim::Rows ? 0 : local.rank() - 1;
  ADAPT_REQUIRE(local.rank() >= 1 && full.rank() == local.rank(), ShapeError, "{}: '{}' {} and '{}' {} differ in rank",
                op, full.name(), full.shape().str(), local.name(), local.shape().str());
  for (int d = 0; d < local.rank(); ++d) {
    ADAPT_REQUIRE(d == axis || full.dim(d) == local.dim(d), ShapeError,
                  "{}: '{}' {} and the part '{}' {} differ outside dimension {}", op, full.name(), full.shape().str(),
                  local.name(), local.shape().str(), axis);
  }
  if (tp.size() == 1) {
    backend::copy(full, local);
    return;
  }
  // Device tensors travel in device buffers (what an NCCL communicator needs; MPI stages them); the
  // parts are put side by side on the host, which is where the whole tensor (logits) is wanted.
  const bool device = on_device(local) || on_device(full);
  const Device dev = on_device(local) ? local.device() : full.device();
  // Rows: (extent, inner) blocks one after the other; Cols: (outer, extent) side by side in every row.
  const std::int64_t extent = local.dim(axis);
  const std::int64_t outer = dim == ShardDim::Rows ? 1 : local.numel() / std::max<std::int64_t>(extent, 1);
  const std::int64_t inner = dim == ShardDim::Rows ? local.numel() / std::max<std::int64_t>(extent, 1) : 1;
  const auto parts = static_cast<std::size_t>(tp.size());
  std::vector<std::int64_t> extents(parts);
  if (device) {
    Tensor mine = Tensor::empty({1}, DType::I64, host_allocator(), "tp_gather.extent");
    *mine.data<std::int64_t>() = extent;
    const Tensor mine_dev = moved_to(mine, dev);
    Tensor all_dev =
        Tensor::empty({static_cast<std::int64_t>(parts)}, DType::I64, allocator_of(dev), "tp_gather.extents");
    tp.all_gather(mine_dev.raw(), all_dev.raw(), 1, comm::CommDType::I64);
    backend::copy_bytes(extents.data(), all_dev.raw(), parts * sizeof(std::int64_t));
  } else {
    tp.all_gather(&extent, extents.data(), 1, comm::CommDType::I64);
  }
  std::int64_t total = 0, widest = 0;
  for (const std::int64_t e : extents) total += e, widest = std::max(widest, e);
  ADAPT_REQUIRE(total == full.dim(axis), ShapeError,
                "{}: the parts of '{}' add up to {} along dimension {}, '{}' {} has {}", op, local.name(), total, axis,
                full.name(), full.shape().str(), full.dim(axis));
  const std::int64_t padded = outer * widest * inner;
  std::vector<float> recv(static_cast<std::size_t>(padded) * parts);
  // The rank's part padded to the widest part (on the host; a device part as wide as the widest goes as it is).
  auto padded_send = [&] {
    std::vector<float> send(static_cast<std::size_t>(padded), 0.0f);
    const Tensor l_host = moved_to(local, Device{});
    const float* l = l_host.data<float>();
    for (std::int64_t o = 0; o < outer; ++o)
      std::copy_n(l + o * extent * inner, extent * inner, send.data() + o * widest * inner);
    return send;
  };
  if (device) {
    Allocator& alloc = allocator_of(dev);
    Tensor send =
        extent == widest && on_device(local) ? local : Tensor::empty({padded}, DType::F32, alloc, "tp_gather.send");
    if (send.raw() != local.raw()) {
      const std::vector<float> host = padded_send();
      backend::copy_bytes(send.raw(), host.data(), host.size() * sizeof(float));
    }
    Tensor recv_dev = Tensor::empty({padded * static_cast<std::int64_t>(parts)}, DType::F32, alloc, "tp_gather.recv");
    tp.all_gather(send.raw(), recv_dev.raw(), padded, comm::CommDType::F32);
    backend::copy_bytes(recv.data(), recv_dev.raw(), recv.size() * sizeof(float));
  } else {
    const std::vector<float> send = padded_send();
    tp.all_gather(send.data(), recv.data(), padded, comm::CommDType::F32);
  }
  Tensor full_host = on_device(full) ? Tensor::empty(full.shape(), DType::F32, host_allocator(), full.name()) : full;
  float* f = full_host.data<float>();
  std::int64_t begin = 0;
  for (std::size_t r = 0; r < parts; ++r) {
    const float* part = recv.data() + static_cast<std::int64_t>(r) * padded;
    for (std::int64_t o = 0; o < outer; ++o)
      std::copy_n(part + o * widest * inner, extents[r] * inner, f + (o * total + begin) * inner);
    begin += extents[r];
  }
  if (on_device(full)) backend::copy(full, full_host);
}

void all_reduce_host_values(comm::Communicator& group, std::span<double> values, comm::ReduceOp op, Device device) {
  if (device.host_accessible()) {
    group.all_reduce(values, op);
    return;
  }
  const auto n = static_cast<std::int64_t>(values.size());
  // 8-byte device storage for the doubles (DType has no f64; the communicator is told F64).
  Tensor buf = Tensor::empty({n}, DType::I64, allocator_of(device), "host_values");
  backend::copy_bytes(buf.raw(), values.data(), values.size_bytes());
  group.all_reduce(buf.raw(), n, comm::CommDType::F64, op);
  backend::copy_bytes(values.data(), buf.raw(), values.size_bytes());
}

}  // namespace adapt::parallel
