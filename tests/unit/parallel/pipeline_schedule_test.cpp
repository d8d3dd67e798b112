// The 1F1B schedule: known sequences, its invariants for many (pp, micro-batch) pairs, and a
// simulation of all stages running their lists with the data dependencies between neighbours
// (a forward needs the previous stage's forward of the same micro-batch, a backward the next stage's
// backward), which must finish, with the pipeline bubble 1F1B promises.
#include "parallel/pipeline_schedule.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "core/error.h"

using namespace adapt;
using namespace adapt::parallel;

TEST_CASE("1F1B: warm-up forwards, alternating steady state, cool-down backwards") {
  CHECK(schedule_str(schedule_1f1b(4, 0, 6)) == "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5");
  CHECK(schedule_str(schedule_1f1b(4, 2, 6)) == "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5");
  CHECK(schedule_str(schedule_1f1b(4, 3, 6)) == "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5");
  CHECK(schedule_str(schedule_1f1b(4, 0, 2)) == "F0 F1 B0 B1");  // fewer micro-batches than stages
  CHECK(schedule_str(schedule_1f1b(1, 0, 3)) == "F0 B0 F1 B1 F2 B2");
  CHECK_THROWS_AS(schedule_1f1b(2, 2, 4), InternalError);
  CHECK_THROWS_AS(schedule_1f1b(2, 0, 0), InternalError);
}

TEST_CASE("1F1B invariants for every stage of many pipelines") {
  for (int pp = 1; pp <= 6; ++pp) {
    for (int m = 1; m <= 9; ++m) {
      for (int s = 0; s < pp; ++s) {
        CAPTURE(pp);
        CAPTURE(m);
        CAPTURE(s);
        const auto steps = schedule_1f1b(pp, s, m);
        REQUIRE(steps.size() == static_cast<std::size_t>(2 * m));
        int next_f = 0, next_b = 0;
        for (const PipeStep& st : steps) {
          if (st.op == PipeOp::Forward) {
            CHECK(st.micro == next_f++);  // forwards in order
          } else {
            CHECK(st.micro == next_b++);  // backwards in order
            CHECK(st.micro < next_f);     // after their own forward
          }
        }
        CHECK(next_f == m);
        CHECK(next_b == m);
        // Activation memory: at most pp - s micro-batches in flight (and never more than m).
        CHECK(max_in_flight(steps) == std::min(pp - s, m));
      }
    }
  }
}

TEST_CASE("all stages running their 1F1B lists with neighbour dependencies finish with the expected bubble") {
  for (int pp = 1; pp <= 6; ++pp) {
    for (int m = 1; m <= 9; ++m) {
      CAPTURE(pp);
      CAPTURE(m);
      // Unit-time steps (a backward costs the same as a forward here); sends are buffered.
      std::vector<std::vector<PipeStep>> lists;
      for (int s = 0; s < pp; ++s) lists.push_back(schedule_1f1b(pp, s, m));
      std::vector<std::vector<int>> f_done(static_cast<std::size_t>(pp),
                                           std::vector<int>(static_cast<std::size_t>(m), -1));
      auto b_done = f_done;
      std::vector<std::size_t> pc(static_cast<std::size_t>(pp), 0);
      int t = 0, finished = 0;
      while (finished < pp && t < 10 * (m + pp)) {
        std::vector<std::pair<int, PipeStep>> run;
        for (int s = 0; s < pp; ++s) {
          const auto& list = lists[static_cast<std::size_t>(s)];
          if (pc[static_cast<std::size_t>(s)] == list.size()) continue;
          const PipeStep st = list[pc[static_cast<std::size_t>(s)]];
          const auto su = static_cast<std::size_t>(s), mu = static_cast<std::size_t>(st.micro);
          const bool ready =
              st.op == PipeOp::Forward
                  ? (s == 0 || (f_done[su - 1][mu] >= 0 && f_done[su - 1][mu] < t))
                  : (f_done[su][mu] >= 0 && (s == pp - 1 || (b_done[su + 1][mu] >= 0 && b_done[su + 1][mu] < t)));
          if (ready) run.push_back({s, st});
        }
        for (const auto& [s, st] : run) {
          auto& done = st.op == PipeOp::Forward ? f_done : b_done;
          done[static_cast<std::size_t>(s)][static_cast<std::size_t>(st.micro)] = t;
          if (++pc[static_cast<std::size_t>(s)] == lists[static_cast<std::size_t>(s)].size()) ++finished;
        }
        ++t;
      }
      REQUIRE(finished == pp);  // no stage waits forever
      // 2m steps of work plus the fill and drain of the pipeline: 2(pp - 1) idle steps.
      CHECK(t == 2 * m + 2 * (pp - 1));
    }
  }
}
