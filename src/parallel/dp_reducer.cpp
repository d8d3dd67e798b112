#include "parallel/dp_reducer.h"

#include "core/error.h"

namespace adapt::parallel {

void dp_average_gradients(std::span<float> grads, const std::vector<GradBucket>& buckets, comm::Communicator& dp) {
  std::int64_t covered = 0;
  for (const GradBucket& b : buckets) {
    ADAPT_CHECK(b.elems.begin == covered, "gradient bucket at {} leaves a gap after {}", b.elems.begin, covered);
    covered = b.elems.end();
  }
  ADAPT_CHECK(covered == static_cast<std::int64_t>(grads.size()), "buckets cover {} of {} gradient elements", covered,
              grads.size());
  if (dp.size() == 1) return;
  const float inv = 1.0f / static_cast<float>(dp.size());
  for (const GradBucket& b : buckets) {
    std::span<float> part =
        grads.subspan(static_cast<std::size_t>(b.elems.begin), static_cast<std::size_t>(b.elems.count));
    dp.all_reduce(part, comm::ReduceOp::Sum);
    for (float& g : part) g *= inv;
  }
}

void zero1_reduce_scatter_average(std::span<const float> grads_padded, std::span<float> shard, comm::Communicator& dp) {
  ADAPT_CHECK(grads_padded.size() == shard.size() * static_cast<std::size_t>(dp.size()),
              "ZeRO-1 reduce-scatter of {} elements into shards of {} over {} ranks", grads_padded.size(), shard.size(),
              dp.size());
  dp.reduce_scatter(grads_padded.data(), shard.data(), static_cast<std::int64_t>(shard.size()), comm::CommDType::F32,
                    comm::ReduceOp::Sum);
  const float inv = 1.0f / static_cast<float>(dp.size());
  for (float& g : shard) g *= inv;
}

void zero1_all_gather(std::span<const float> shard, std::span<float> params_padded, comm::Communicator& dp) {
  ADAPT_CHECK(params_padded.size() == shard.size() * static_cast<std::size_t>(dp.size()),
              "ZeRO-1 all-gather of shards of {} into {} elements over {} ranks", shard.size(), params_padded.size(),
              dp.size());
  dp.all_gather(shard.data(), params_padded.data(), static_cast<std::int64_t>(shard.size()), comm::CommDType::F32);
}

}  // namespace adapt::parallel
