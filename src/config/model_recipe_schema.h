// The TOML schema of model recipes (inputs/models/*.toml), read by `adapt_model make --recipe`.
#pragma once

#include "config/config_schema.h"
#include "model/model_recipe.h"

namespace adapt::config {

const Schema<model::ModelRecipe>& model_recipe_schema();

}  // namespace adapt::config
