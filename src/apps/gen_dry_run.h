// adapt_gen --dry-run: the job as read, then what a run would do with each prompt and the memory it
// would take (adapt_plan's figures for the job's layout), without loading weights or generating.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "apps/gen_job.h"
#include "generate/conversation.h"
#include "generate/gen_config.h"
#include "generate/progress.h"
#include "model/llama_config.h"
#include "tokenizer/tokenizer.h"

namespace adapt::apps {

/// --dry-run: the job as read, then what a run would do with each prompt (skip it, being in the results
/// already; run it; or not run it, saying why), the device, and the memory line. A conversation's turns
/// follow one another: each later turn of this job sees the turns before it. ConfigError when a prompt
/// would not run.
void dry_run_report(const GenJobContext& ctx, const std::vector<Prepared>& prepared);

}  // namespace adapt::apps
