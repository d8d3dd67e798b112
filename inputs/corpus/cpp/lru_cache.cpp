// lru_cache.cpp - a fixed-capacity least-recently-used cache with O(1) get/put, plus hit statistics.
//
// Entries live in a std::list ordered from most to least recently used; an unordered_map points from
// each key to its list node. std::list::splice moves a node to the front without invalidating the
// iterators stored in the map, which is what keeps both operations constant time.
//
//   g++ -std=c++17 -O2 -Wall -Wextra lru_cache.cpp -o lru_cache && ./lru_cache

#include <cstddef>
#include <functional>
#include <iostream>
#include <list>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

template <typename Key, typename Value, typename Hash = std::hash<Key>>
class LruCache {
 public:
  struct Stats {
    std::size_t hits = 0;
    std::size_t misses = 0;
    std::size_t evictions = 0;
    double hit_rate() const {
      std::size_t total = hits + misses;
      return total == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(total);
    }
  };

  // Called with the key and value of every evicted entry (for example to flush dirty pages).
  using EvictionCallback = std::function<void(const Key&, const Value&)>;

  explicit LruCache(std::size_t capacity, EvictionCallback on_evict = nullptr)
      : capacity_(capacity), on_evict_(std::move(on_evict)) {
    if (capacity_ == 0) throw std::invalid_argument("LruCache capacity must be at least 1");
    index_.reserve(capacity_);
  }

  // Returns a copy of the cached value and marks the entry as most recently used.
  std::optional<Value> get(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) {
      ++stats_.misses;
      return std::nullopt;
    }
    ++stats_.hits;
    entries_.splice(entries_.begin(), entries_, it->second);
    return it->second->second;
  }

  // Looks at an entry without changing its recency or the statistics.
  const Value* peek(const Key& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &it->second->second;
  }

  // Inserts or replaces; evicts the least recently used entry when the cache is full.
  void put(const Key& key, Value value) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      it->second->second = std::move(value);
      entries_.splice(entries_.begin(), entries_, it->second);
      return;
    }
    if (entries_.size() == capacity_) evict_one();
    entries_.emplace_front(key, std::move(value));
    index_.emplace(key, entries_.begin());
  }

  // Returns the cached value, computing and inserting it with `make` on a miss.
  template <typename Factory>
  const Value& get_or_insert(const Key& key, Factory&& make) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      ++stats_.hits;
      entries_.splice(entries_.begin(), entries_, it->second);
      return it->second->second;
    }
    ++stats_.misses;
    put(key, make(key));
    return entries_.front().second;
  }

  bool erase(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    entries_.erase(it->second);
    index_.erase(it);
    return true;
  }

  // Shrinking the capacity evicts from the cold end until the cache fits.
  void resize(std::size_t capacity) {
    if (capacity == 0) throw std::invalid_argument("LruCache capacity must be at least 1");
    capacity_ = capacity;
    while (entries_.size() > capacity_) evict_one();
  }

  void clear() {
    entries_.clear();
    index_.clear();
  }

  std::size_t size() const { return entries_.size(); }
  std::size_t capacity() const { return capacity_; }
  const Stats& stats() const { return stats_; }

  // Keys from most to least recently used; handy in tests and debug dumps.
  std::vector<Key> keys_by_recency() const {
    std::vector<Key> keys;
    keys.reserve(entries_.size());
    for (const auto& entry : entries_) keys.push_back(entry.first);
    return keys;
  }

 private:
  using Entry = std::pair<Key, Value>;

  void evict_one() {
    const Entry& victim = entries_.back();
    if (on_evict_) on_evict_(victim.first, victim.second);
    index_.erase(victim.first);
    entries_.pop_back();
    ++stats_.evictions;
  }

  std::size_t capacity_;
  EvictionCallback on_evict_;
  std::list<Entry> entries_;
  std::unordered_map<Key, typename std::list<Entry>::iterator, Hash> index_;
  Stats stats_;
};

// ---- tests ----------------------------------------------------------------------------------------

namespace {

int failures = 0;

#define EXPECT(cond)                                                          \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::cerr << __FILE__ << ":" << __LINE__ << ": expected " #cond "\n"; \
      ++failures;                                                             \
    }                                                                         \
  } while (0)

void test_basic_eviction_order() {
  LruCache<int, std::string> cache(2);
  cache.put(1, "one");
  cache.put(2, "two");
  EXPECT(cache.get(1).value() == "one");  // 1 becomes most recent
  cache.put(3, "three");                  // evicts 2
  EXPECT(!cache.get(2).has_value());
  EXPECT(cache.get(3).value() == "three");
  EXPECT((cache.keys_by_recency() == std::vector<int>{3, 1}));
}

void test_replace_refreshes_recency() {
  LruCache<std::string, int> cache(3);
  cache.put("a", 1);
  cache.put("b", 2);
  cache.put("c", 3);
  cache.put("a", 10);  // refresh "a"
  cache.put("d", 4);   // evicts "b"
  EXPECT(cache.peek("b") == nullptr);
  EXPECT(*cache.peek("a") == 10);
  EXPECT(cache.size() == 3);
}

void test_eviction_callback_and_resize() {
  std::vector<int> evicted;
  LruCache<int, int> cache(4, [&](const int& k, const int&) { evicted.push_back(k); });
  for (int i = 0; i < 6; ++i) cache.put(i, i * i);
  EXPECT((evicted == std::vector<int>{0, 1}));
  cache.resize(2);
  EXPECT((evicted == std::vector<int>{0, 1, 2, 3}));
  EXPECT(cache.stats().evictions == 4);
  EXPECT((cache.keys_by_recency() == std::vector<int>{5, 4}));
}

void test_get_or_insert_counts_hits() {
  int computed = 0;
  LruCache<int, long> cache(8);
  auto square = [&](int k) {
    ++computed;
    return static_cast<long>(k) * k;
  };
  for (int round = 0; round < 3; ++round)
    for (int k = 0; k < 5; ++k) EXPECT(cache.get_or_insert(k, square) == static_cast<long>(k) * k);
  EXPECT(computed == 5);
  EXPECT(cache.stats().hits == 10);
  EXPECT(cache.stats().misses == 5);
  EXPECT(cache.stats().hit_rate() > 0.66 && cache.stats().hit_rate() < 0.67);
}

void test_erase_and_clear() {
  LruCache<int, int> cache(3);
  cache.put(1, 1);
  cache.put(2, 2);
  EXPECT(cache.erase(1));
  EXPECT(!cache.erase(1));
  EXPECT(cache.size() == 1);
  cache.clear();
  EXPECT(cache.size() == 0);
  bool threw = false;
  try {
    LruCache<int, int> bad(0);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw);
}

// A memoised Fibonacci, the classic demonstration: without the cache this is exponential.
unsigned long long fib(int n, LruCache<int, unsigned long long>& memo) {
  if (n < 2) return static_cast<unsigned long long>(n);
  if (const auto* hit = memo.peek(n)) return *hit;
  unsigned long long value = fib(n - 1, memo) + fib(n - 2, memo);
  memo.put(n, value);
  return value;
}

void test_memoised_fibonacci() {
  LruCache<int, unsigned long long> memo(128);
  EXPECT(fib(90, memo) == 2880067194370816120ULL);
}

}  // namespace

int main() {
  test_basic_eviction_order();
  test_replace_refreshes_recency();
  test_eviction_callback_and_resize();
  test_get_or_insert_counts_hits();
  test_erase_and_clear();
  test_memoised_fibonacci();
  std::cout << (failures == 0 ? "lru_cache: all tests passed" : "lru_cache: FAILURES") << "\n";
  return failures == 0 ? 0 : 1;
}
