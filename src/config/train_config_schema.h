// The TOML schema of training jobs (inputs/train.toml), read by adapt_train.
#pragma once

#include "config/config_schema.h"
#include "train/train_config.h"

namespace adapt::config {

const Schema<train::TrainConfig>& train_config_schema();

}  // namespace adapt::config
