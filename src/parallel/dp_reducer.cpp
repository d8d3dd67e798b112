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

namespace {
void check_layout(std::size_t padded, std::size_t shard, const Zero1Layout& layout, const comm::Communicator& dp) {
  ADAPT_CHECK(layout.dp_size == dp.size() && padded == static_cast<std::size_t>(layout.padded) &&
                  shard == static_cast<std::size_t>(layout.shard),
              "ZeRO-1 units of {} padded and {} shard elements over {} ranks, given {} and {} over {}", layout.padded,
              layout.shard, layout.dp_size, padded, shard, dp.size());
}
}  // namespace

void zero1_reduce_scatter_average(std::span<const float> grads_padded, std::span<float> shard,
                                  const Zero1Layout& layout, comm::Communicator& dp) {
  check_layout(grads_padded.size(), shard.size(), layout, dp);
  for (const Zero1Unit& u : layout.units) {
    const auto chunk = static_cast<std::size_t>(u.chunk);
    zero1_reduce_scatter_average(
        grads_padded.subspan(static_cast<std::size_t>(u.padded_begin), chunk * static_cast<std::size_t>(dp.size())),
        shard.subspan(static_cast<std::size_t>(u.shard_begin), chunk), dp);
  }
}

void zero1_all_gather(std::span<const float> shard, std::span<float> params_padded, const Zero1Layout& layout,
                      std::size_t unit, comm::Communicator& dp) {
  check_layout(params_padded.size(), shard.size(), layout, dp);
  ADAPT_CHECK(unit < layout.units.size(), "ZeRO-1 unit {} of {}", unit, layout.units.size());
  const Zero1Unit& u = layout.units[unit];
  const auto chunk = static_cast<std::size_t>(u.chunk);
  zero1_all_gather(
      shard.subspan(static_cast<std::size_t>(u.shard_begin), chunk),
      params_padded.subspan(static_cast<std::size_t>(u.padded_begin), chunk * static_cast<std::size_t>(dp.size())), dp);
}

}  // namespace adapt::parallel
