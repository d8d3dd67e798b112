#include "parallel/zero_partition.h"

#include <algorithm>

#include "core/error.h"

namespace adapt::parallel {

std::int64_t zero_shard_count(std::int64_t n, int dp_size, std::int64_t align) {
  ADAPT_CHECK(n >= 0 && dp_size >= 1 && align >= 1, "ZeRO shard of {} elements over {} ranks, align {}", n, dp_size,
              align);
  const std::int64_t per = (n + dp_size - 1) / dp_size;
  return (per + align - 1) / align * align;
}

Range zero_shard(std::int64_t n, int dp_size, int dp_rank, std::int64_t align) {
  ADAPT_CHECK(dp_rank >= 0 && dp_rank < dp_size, "dp rank {} of {}", dp_rank, dp_size);
  const std::int64_t c = zero_shard_count(n, dp_size, align);
  const std::int64_t begin = std::min(n, dp_rank * c);
  return {.begin = begin, .count = std::min(n, begin + c) - begin};
}

std::vector<GradBucket> gradient_buckets(const std::vector<std::int64_t>& param_numels, std::int64_t bucket_elems) {
  ADAPT_CHECK(bucket_elems >= 1, "gradient bucket of {} elements", bucket_elems);
  std::vector<GradBucket> out;
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < param_numels.size(); ++i) {
    ADAPT_CHECK(param_numels[i] >= 0, "parameter {} has {} elements", i, param_numels[i]);
    if (out.empty() || out.back().elems.count >= bucket_elems) {
      out.push_back({.first_param = static_cast<int>(i), .n_params = 0, .elems = {.begin = offset, .count = 0}});
    }
    ++out.back().n_params;
    out.back().elems.count += param_numels[i];
    offset += param_numels[i];
  }
  return out;
}

Range Zero1Unit::owned(int dp_rank) const {
  const std::int64_t begin = std::min(elems.end(), elems.begin + dp_rank * chunk);
  return {.begin = begin, .count = std::min(elems.end(), begin + chunk) - begin};
}

Zero1Layout zero1_layout(const std::vector<std::int64_t>& group_numels, std::int64_t bucket_elems, int dp_size,
                         std::int64_t align) {
  ADAPT_CHECK(dp_size >= 1, "ZeRO-1 layout over {} ranks", dp_size);
  Zero1Layout out{.dp_size = dp_size};
  for (const GradBucket& b : gradient_buckets(group_numels, bucket_elems)) {
    Zero1Unit u{.first_group = b.first_param,
                .n_groups = b.n_params,
                .elems = b.elems,
                .chunk = zero_shard_count(b.elems.count, dp_size, align),
                .padded_begin = out.padded,
                .shard_begin = out.shard};
    out.padded += u.chunk * dp_size;
    out.shard += u.chunk;
    out.units.push_back(u);
  }
  return out;
}

}  // namespace adapt::parallel
