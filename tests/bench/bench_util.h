// Small pieces the benchmark programs share: comma-separated size lists from the command line and the
// median of repeated timings.
#pragma once

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace adapt::bench {

/// "1000,2000" -> {1000, 2000} (std::stoll per item: throws on a non-number).
inline std::vector<std::int64_t> parse_list(const char* s) {
  std::vector<std::int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

/// The upper median of `v` (not empty).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace adapt::bench
