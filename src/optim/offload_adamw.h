// OffloadAdamW: AdamW whose fp32 master weights, moments and gradient copy live in host RAM (pinned
// when the parameters are on a GPU), updated by a multithreaded, vectorised CPU AdamW. Gradients are
// copied device→host per bucket as they become ready; each updated bucket is copied back (f32, or
// rounded to bf16) while the CPU updates the next. The state is one flat vector of n elements: all of a
// replica's parameters, or its ZeRO-1 shard. With parameters in host memory the copies are memcpys.
// step_async runs the same update on a background thread (optim.overlap), publishing how far it got, so
// that the next forward can start on the first layers while the CPU still updates the last ones.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/offload_copier.h"
#include "optim/adamw.h"
#include "optim/adamw_simd.h"
#include "optim/worker_pool.h"
#include "tensor/tensor.h"

namespace adapt::optim {

struct OffloadOptions {
  int threads = 0;                      // CPU threads for the update, the caller's included (0: all cores)
  std::int64_t bucket_elems = 1 << 20;  // elements per copy-back bucket (4 MiB of f32)
  std::int64_t chunk_elems = 1 << 14;   // elements per CPU task (four 64 KiB streams)
};

/// A range [begin, begin + count) of the flat state and whether weight decay applies to it.
struct OffloadSegment {
  std::int64_t begin = 0;
  std::int64_t count = 0;
  bool decay = true;
};

/// Where the updated weights of the range [begin, begin + count) of the flat state are copied after
/// each step: `count` elements of `dtype` (F32 or BF16) at `dst`, on the parameters' device (queued on
/// the copier), or, with `host`, in host memory (copied at once by the thread that updates the bucket:
/// e.g. a GPU set's host mirrors beside its device parameters).
struct OffloadTarget {
  std::int64_t begin = 0;
  std::int64_t count = 0;
  void* dst = nullptr;
  DType dtype = DType::F32;
  bool host = false;
};

class OffloadAdamW {
 public:
  /// State for `n` elements, zero-initialised. `segments` cover [0, n) without overlap (ranges outside
  /// every segment are updated with decay); `param_device` is where the gradients and weights live
  /// (a CUDA device: pinned buffers and the CUDA copier; host: plain memory and memcpy).
  OffloadAdamW(std::int64_t n, std::vector<OffloadSegment> segments, const AdamWOptions& adamw, Device param_device,
               const OffloadOptions& options = {});
  ~OffloadAdamW();
  OffloadAdamW(const OffloadAdamW&) = delete;
  OffloadAdamW& operator=(const OffloadAdamW&) = delete;

  std::int64_t size() const { return n_; }
  /// Host views of the flat state (n elements each).
  float* master() { return master_.data<float>(); }
  float* m() { return m_.data<float>(); }
  float* v() { return v_.data<float>(); }
  float* grad() { return grad_.data<float>(); }
  const float* master() const { return master_.data<float>(); }
  const float* m() const { return m_.data<float>(); }
  const float* v() const { return v_.data<float>(); }
  /// Pinned host or CPU.
  Device host_device() const { return master_.device(); }
  int threads() const { return pool_.size(); }
  CpuIsa isa() const { return isa_; }
  /// Forces an instruction set (for tests and benchmarks); InternalError at step() if unsupported.
  void set_isa(CpuIsa isa) { isa_ = isa; }

  /// Replaces the write-back targets (ShapeError when a range leaves [0, n) or a dtype is not f32/bf16).
  void set_targets(std::vector<OffloadTarget> targets);

  /// Queues the copy of the gradient range [begin, begin + count) from `src` (count f32 on the
  /// parameters' device) into grad(), after the work queued so far on `compute_stream` (cudaStream_t).
  void stage_grads(std::int64_t begin, std::int64_t count, const float* src, void* compute_stream = nullptr);
  /// Blocks until every staged gradient is in grad().
  void wait_grads();

  /// Copies `count` gradients from host memory at `src` into grad() at `begin` (memcpy), for gradients
  /// that are already on the host (reduced there over dp or pp). Not while a step runs (finish() first).
  void load_grads(std::int64_t begin, std::int64_t count, const float* src);

  /// One AdamW step with learning rate `lr` over the whole state from grad() (complete: wait_grads()),
  /// bucket by bucket; each bucket's targets are queued for copying as soon as it is updated, after the
  /// work queued so far on `compute_stream` (cudaStream_t; nullptr: the legacy default stream), which may
  /// still read the old values.
  void step(double lr, void* compute_stream = nullptr);
  /// The same step on a background thread: returns at once (after wait_grads()). The buckets are
  /// updated in flat order, each one's targets written or queued before progress() moves past it. Until
  /// finish(), nothing else may read or write the state, grad() or the targets' ranges beyond
  /// progress(), and the only calls allowed are progress(), wait_updated(), weights_ready() and
  /// finish(). Bit for bit the update of step(). The thread makes no MPI or collective calls. The
  /// write-backs wait for the work queued so far on `compute_stream` (cudaStream_t), which may still read
  /// the old weights.
  void step_async(double lr, void* compute_stream = nullptr);
  /// Elements [0, progress()) of the last step are updated and their write-backs written or queued;
  /// monotone within a step, size() once it is complete (and when no step ran).
  std::int64_t progress() const;
  /// Blocks until progress() >= end (clamped to size()); rethrows the background step's exception
  /// when it failed before getting there.
  void wait_updated(std::int64_t end);
  /// Blocks until the background step is complete (no-op without one) and rethrows its exception, once.
  void finish();
  /// True between step_async() and finish().
  bool stepping() const { return runner_.joinable(); }
  /// Makes `compute_stream` wait for the write-backs queued so far (host: nothing to wait for).
  void weights_ready(void* compute_stream = nullptr);
  /// Blocks until the write-backs of the last step are done (finish() first under step_async).
  void synchronize();
  /// The copier (thread-safe): for copies ordered with the write-backs, such as gradients streamed
  /// during the backward.
  backend::OffloadCopier& copier() { return *copier_; }

  std::int64_t n_steps() const { return n_steps_; }
  void set_n_steps(std::int64_t n) { n_steps_ = n; }
  const AdamWOptions& options() const { return adamw_; }

 private:
  std::int64_t n_;
  std::vector<OffloadSegment> segments_;
  AdamWOptions adamw_;
  OffloadOptions options_;
  std::unique_ptr<backend::OffloadCopier> copier_;
  WorkerPool pool_;
  CpuIsa isa_;
  Tensor master_, m_, v_, grad_;  // f32 (n), host
  Tensor staging_bf16_;           // bf16 (n) when a target is bf16
  std::vector<OffloadTarget> targets_;
  std::int64_t last_ticket_ = 0;
  std::int64_t n_steps_ = 0;
  // step_async: the background thread and what it publishes (under mutex_).
  std::thread runner_;
  mutable std::mutex mutex_;
  std::condition_variable moved_;
  std::int64_t progress_ = 0;
  bool running_ = false;
  std::exception_ptr error_;

  /// The update of one step (n_steps_ already counted), publishing progress after each bucket.
  void run_step(double lr);
  void publish(std::int64_t done);
};

}  // namespace adapt::optim
