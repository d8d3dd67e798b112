// The fuzz targets' own driver (used unless the build links libFuzzer): runs every seed (the
// target's fuzz_seeds() and the files or folders named on the command line), then --runs mutated
// inputs drawn from a seeded generator, so a run is the same on every machine. A finding (an
// exception other than adapt::Error, a crash) writes the input to fuzz-crash-<target>.bin in the
// current folder and exits non-zero; rerun that one input with `fuzz_<target> <file> --runs 0`.
//
//   fuzz_<target> [--runs N] [--seed S] [--max-len BYTES] [--write-seeds DIR] [--save-slowest FILE]
//                 [FILE|DIR ...]
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/timer.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

namespace fs = std::filesystem;

const std::string* g_current = nullptr;  // the input being run, for the crash report
std::string g_name;

void dump_current(const char* why) {
  if (g_current == nullptr) return;
  const std::string file = "fuzz-crash-" + g_name + ".bin";
  if (std::FILE* f = std::fopen(file.c_str(), "wb")) {
    std::fwrite(g_current->data(), 1, g_current->size(), f);
    std::fclose(f);
  }
  std::fprintf(stderr, "fuzz_%s: FINDING (%s) on an input of %zu bytes, written to %s\n", g_name.c_str(), why,
               g_current->size(), file.c_str());
}

void on_signal(int sig) {
  dump_current(sig == SIGSEGV ? "SIGSEGV" : sig == SIGABRT ? "SIGABRT" : sig == SIGFPE ? "SIGFPE" : "SIGBUS");
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// One to four random edits of `s`, the kinds that break parsers: bit flips, bytes that matter to
/// the formats, numbers at their limits, cut, repeated and spliced ranges.
std::string mutate(std::string s, const std::vector<std::string>& seeds, std::mt19937_64& rng, std::size_t max_len) {
  static const char kBytes[] = {'\0', '\x01', '\x7f', '\x80', '\xff', '"', '{',  '}', '[', ']', ',',  ':',
                                '0',  '9',    '-',    '\n',   '=',    '.', '\\', 'e', ' ', '#', '\'', 'n'};
  static const char* kNumbers[] = {"-1",    "0",          "18446744073709551615", "9223372036854775807",
                                   "1e309", "4294967296", "-9223372036854775808", "nan",
                                   "65536", "1.5"};
  auto pick = [&](std::size_t n) { return n == 0 ? std::size_t{0} : static_cast<std::size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const std::size_t at = pick(s.size() + 1);
    switch (rng() % 8) {
      case 0:
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:
        if (!s.empty()) s[pick(s.size())] = kBytes[pick(sizeof kBytes)];
        break;
      case 2: s.erase(at, 1 + pick(rng() % 4 == 0 ? s.size() / 8 + 1 : 16)); break;
      case 3: {  // repeat a range
        const std::size_t from = pick(s.size() + 1);
        s.insert(at, s.substr(from, 1 + pick(32)));
        break;
      }
      case 4: s.resize(at); break;
      case 5:
        for (std::size_t n = 1 + pick(8); n > 0; --n)
          s.insert(s.begin() + static_cast<std::ptrdiff_t>(pick(s.size() + 1)), static_cast<char>(rng()));
        break;
      case 6: {  // a number at a limit, over what is there
        const std::string num = kNumbers[pick(std::size(kNumbers))];
        s.replace(at, pick(num.size() + 2), num);
        break;
      }
      default: {  // splice: this one's head, another seed's tail
        const std::string& other = seeds[pick(seeds.size())];
        s = s.substr(0, at) + other.substr(pick(other.size() + 1));
        break;
      }
    }
  }
  if (s.size() > max_len) s.resize(max_len);
  return s;
}

std::int64_t g_refused = 0;  // inputs refused with an adapt::Error

bool run_one(const std::string& input) {
  g_current = &input;
  adapt::fuzz::refused_flag() = false;
  try {
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(input.data()), input.size());
  } catch (const std::exception& e) {
    dump_current(e.what());
    return false;
  }
  g_current = nullptr;
  g_refused += adapt::fuzz::refused_flag() ? 1 : 0;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  g_name = fs::path(argv[0]).filename().string();
  if (g_name.rfind("fuzz_", 0) == 0) g_name = g_name.substr(5);
  long long runs = 2000;
  unsigned long long seed = 1;
  std::size_t max_len = 1 << 20;
  std::string write_seeds, save_slowest;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--runs") runs = std::stoll(value());
    else if (a == "--seed") seed = std::stoull(value());
    else if (a == "--max-len") max_len = std::stoull(value());
    else if (a == "--write-seeds") write_seeds = value();
    else if (a == "--save-slowest") save_slowest = value();
    else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: fuzz_%s [--runs N] [--seed S] [--max-len BYTES] [--write-seeds DIR] [--save-slowest FILE] "
          "[FILE|DIR ...]\n",
          g_name.c_str());
      return 0;
    } else if (fs::is_directory(a)) {
      for (const auto& e : fs::recursive_directory_iterator(a))
        if (e.is_regular_file()) inputs.push_back(read_file(e.path()));
    } else if (fs::is_regular_file(a)) {
      inputs.push_back(read_file(a));
    } else {
      std::fprintf(stderr, "fuzz_%s: '%s' is neither an option nor a file or folder\n", g_name.c_str(), a.c_str());
      return 2;
    }
  }
  for (int sig : {SIGSEGV, SIGABRT, SIGFPE, SIGBUS}) std::signal(sig, on_signal);
  std::set_terminate([] {
    dump_current("uncaught exception");
    std::abort();
  });

  adapt::log::set_level(adapt::log::Level::Quiet);  // refusals warn; the summary says how many
  adapt::Timer timer;
  std::vector<std::string> seeds = adapt::fuzz::fuzz_seeds();
  if (!write_seeds.empty()) {  // a starting corpus for libFuzzer
    fs::create_directories(write_seeds);
    for (std::size_t i = 0; i < seeds.size(); ++i) {
      std::ofstream out(fs::path(write_seeds) / ("seed-" + std::to_string(i)), std::ios::binary);
      out << seeds[i];
    }
    std::printf("fuzz_%s: %zu seeds written to %s\n", g_name.c_str(), seeds.size(), write_seeds.c_str());
    return 0;
  }
  // The target's own seeds are valid inputs: one refused means the target or its seeds are broken.
  for (const std::string& s : seeds)
    if (!run_one(s)) return 1;
  const std::int64_t seeds_refused = g_refused;
  if (seeds_refused > 0) {
    std::fprintf(stderr, "fuzz_%s: %lld of the target's %zu seed(s) refused; they must be valid inputs\n",
                 g_name.c_str(), static_cast<long long>(seeds_refused), seeds.size());
    return 3;
  }
  for (const std::string& s : inputs)
    if (!run_one(s)) return 1;
  seeds.insert(seeds.end(), inputs.begin(), inputs.end());
  if (seeds.empty()) {
    std::fprintf(stderr, "fuzz_%s: no seeds\n", g_name.c_str());
    return 2;
  }
  const std::int64_t before = g_refused;
  std::mt19937_64 rng(seed);
  double slowest = 0;
  for (long long i = 0; i < runs; ++i) {
    const std::string input = mutate(seeds[static_cast<std::size_t>(rng() % seeds.size())], seeds, rng, max_len);
    adapt::Timer one;
    if (!run_one(input)) {
      std::fprintf(stderr, "fuzz_%s: at mutated input %lld (--seed %llu)\n", g_name.c_str(), i, seed);
      return 1;
    }
    if (one.seconds() > slowest) {
      slowest = one.seconds();
      if (!save_slowest.empty()) std::ofstream(save_slowest, std::ios::binary) << input;
    }
  }
  const std::int64_t refused = g_refused - before;
  std::printf(
      "fuzz_%s: %zu seed(s), %lld mutated input(s): %lld accepted, %lld refused with an adapt error, no "
      "finding; %.1f s (slowest input %.3f s)\n",
      g_name.c_str(), seeds.size(), runs, static_cast<long long>(runs - refused), static_cast<long long>(refused),
      timer.seconds(), slowest);
  return 0;
}
