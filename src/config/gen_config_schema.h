// The TOML schema of generation jobs (prompts files such as inputs/prompts.toml), read by adapt_gen.
#pragma once

#include "config/config_schema.h"
#include "generate/gen_config.h"

namespace adapt::config {

const Schema<generate::GenJob>& gen_job_schema();

}  // namespace adapt::config
