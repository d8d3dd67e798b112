// adapt_gen's run of a job once the model is placed: which prompts of this replica are left (what the
// results file holds is done), the conversations they continue, then waves of batches (every prompt
// without a conversation and the first pending turn of each conversation, then each conversation's next
// turn), each prompt's result, output file, conversation and KV cache written as it finishes, its
// progress saved on the way, and on SIGUSR1/SIGTERM a stop after the current step.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "apps/app_parallel.h"
#include "apps/gen_job.h"
#include "dtype/dtype.h"
#include "generate/conversation.h"
#include "generate/gen_config.h"
#include "generate/generator.h"
#include "generate/progress.h"
#include "generate/prompt_shard.h"
#include "model/llama_config.h"
#include "tokenizer/tokenizer.h"

namespace adapt::apps {

/// Runs this replica's share of `prepared` (dp replica r takes the prompts whose share key is r modulo
/// dp) on `gen`, every rank of the replica taking every step; the replica's first rank (tp 0, pp 0)
/// decides what is left and writes. With dp > 1 each replica writes a part file, merged into the results
/// file at the end (parts an interrupted run left are merged first). Collective over app.world().
/// Returns the exit code: 0 done; kExitRequeue stopped by a signal with the progress of the prompts in
/// flight saved; ExitCode::Usage when some later turns of a conversation could not run. A turn of the
/// first wave that cannot run stops the job before anything is generated (train::CollectiveError).
int gen_run(const GenJobContext& ctx, const std::vector<Prepared>& prepared, generate::Generator& gen,
            ParallelApp& app);

}  // namespace adapt::apps
