// Which keys a query sees, shared by the segment-masked attention forward and the attention backward
// (internal to ops/cpu). Causal: key j is visible to query t when j <= offset + t. With segment ids
// (packed documents; keys are the queries' own tokens, offset 0) additionally seg[j] == seg[t] >= 0:
// a negative id is padding, which sees no key and is seen by no query. first[t] / last[j] bound the
// work: query t sees no key before first[t], key j is seen by no query after last[j].
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace adapt::ops::cpu {

struct Visibility {
  std::int64_t offset = 0;
  const std::int32_t* seg = nullptr;  // (T) of this sequence, or null
  std::vector<std::int64_t> first, last;

  void build(const std::int32_t* seg_b, std::int64_t T, std::int64_t offset_b) {
    seg = seg_b;
    offset = offset_b;
    if (!seg) return;
    first.resize(static_cast<std::size_t>(T));
    last.resize(static_cast<std::size_t>(T));
    std::unordered_map<std::int32_t, std::int64_t> seen;
    for (std::int64_t t = 0; t < T; ++t) first[static_cast<std::size_t>(t)] = seen.try_emplace(seg[t], t).first->second;
    seen.clear();
    for (std::int64_t t = T - 1; t >= 0; --t)
      last[static_cast<std::size_t>(t)] = seen.try_emplace(seg[t], t).first->second;
  }
  bool visible(std::int64_t t, std::int64_t j) const {
    return j <= offset + t && (!seg || (seg[t] >= 0 && seg[t] == seg[j]));
  }
};

}  // namespace adapt::ops::cpu
