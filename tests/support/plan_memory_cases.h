// The job variants whose memory adapt_plan's prediction is checked against measured adapt_train runs
// (tests/e2e/adapt_plan_e2e_test.cpp on the CPU, tests/gpu/train_app_gpu_test.cpp on a GPU): the same
// setting as an adapt_train --set option and as an adapt_plan flag.
#pragma once

namespace adapt::test {

struct PlanMemoryCase {
  const char* name;
  const char* train_set;  // adapt_train --set options
  const char* plan_flag;  // the same for adapt_plan
};

inline constexpr PlanMemoryCase kPlanMemoryCases[] = {{"no recompute", "", ""},
                                                      {"recompute", " --set train.recompute=true", " --recompute"},
                                                      {"optimizer offload", " --set optim.offload=true", " --offload"}};

}  // namespace adapt::test
