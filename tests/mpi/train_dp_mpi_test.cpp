// train's data-parallel optimizer under mpiexec (2 and 4 ranks, the world as the dp group):
// DpOptimizer with and without ZeRO-1 (one unit or several) gives every replica the update a single
// process computes from the mean gradient (clipping included), and its state() holds whole tensors that
// restore() takes back on another dp.
#include <doctest/doctest.h>

#include <cmath>
#include <utility>
#include <vector>

#include "comm/local_communicator.h"
#include "comm/mpi_communicator.h"
#include "dp_param_util.h"
#include "train/dp_optimizer.h"

using namespace adapt;
using test::fill_dp_grads, test::fill_dp_mean_grads, test::max_rel_diff;

namespace {

std::vector<adapters::AdapterParam> make_params(const char* tag) {
  return test::make_dp_params(tag, test::kDpParamShapes);
}

}  // namespace

TEST_CASE("DpOptimizer: every replica gets the single-process update of the mean gradient, with and without ZeRO-1") {
  auto dp = comm::MpiCommunicator::world({.timeout_s = 60});
  const int P = dp->size();
  const optim::AdamWOptions opts{.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
  // bucket: one ZeRO-1 unit, or two (tensors 0-1 and 2-3, each split over dp on its own); the averaging's
  // all-reduces in one bucket or two.
  for (const auto& layout : {std::pair{false, parallel::kDpBucketElems}, std::pair{false, std::int64_t{150}},
                             std::pair{true, parallel::kDpBucketElems}, std::pair{true, std::int64_t{150}}}) {
    const bool zero1 = layout.first;
    const std::int64_t bucket = layout.second;
    for (const double max_norm : {0.0, 0.5}) {
      CAPTURE(zero1);
      CAPTURE(bucket);
      CAPTURE(max_norm);
      // Reference: one process, the mean of every replica's gradient.
      std::vector<adapters::AdapterParam> ref = make_params("ref.");
      comm::LocalCommunicator local;
      train::DpOptimizer ref_opt(ref, opts, local);
      std::vector<adapters::AdapterParam> mine = make_params("mine.");
      train::DpOptimizer opt(mine, opts, *dp, {.zero1 = zero1, .bucket_elems = bucket});
      for (int s = 0; s < 3; ++s) {
        fill_dp_mean_grads(ref, P, s);
        fill_dp_grads(mine, dp->rank(), s);
        const double ref_norm = ref_opt.reduce_and_clip(max_norm);
        const double norm = opt.reduce_and_clip(max_norm);
        CHECK(std::fabs(norm - ref_norm) <= 1e-6 * ref_norm);
        ref_opt.step(1e-2);
        opt.step(1e-2);
      }
      for (std::size_t i = 0; i < ref.size(); ++i) CHECK(max_rel_diff(mine[i].value, ref[i].value) <= 1e-6);
      // Whole state on every replica, equal to the single process's.
      const auto st = opt.state(), ref_st = ref_opt.state();
      REQUIRE(st.size() == ref_st.size());
      for (const auto& [key, t] : ref_st) {
        CAPTURE(key);
        REQUIRE(st.count(key) == 1);
        CHECK(st.at(key).shape() == t.shape());
        CHECK(max_rel_diff(st.at(key), t) <= 1e-5);
      }
      // Restored onto this layout from the single process's state, one more step agrees again.
      std::vector<adapters::AdapterParam> back = make_params("back.");
      train::DpOptimizer opt2(back, opts, *dp, {.zero1 = zero1, .bucket_elems = bucket});
      opt2.restore([&](const std::string& key) -> const Tensor& { return ref_st.at(key); });
      opt2.set_n_steps(ref_opt.n_steps());
      fill_dp_grads(back, dp->rank(), 7);
      fill_dp_mean_grads(ref, P, 7);
      opt2.reduce_and_clip(max_norm);
      ref_opt.reduce_and_clip(max_norm);
      opt2.step(1e-2);
      ref_opt.step(1e-2);
      for (std::size_t i = 0; i < ref.size(); ++i) CHECK(max_rel_diff(back[i].value, ref[i].value) <= 1e-6);
    }
  }
}
