// The cost side of planning: what one routed expert (weights + router row) of each MoE layer
// weighs in a given checkpoint, so budgets in bytes/params and predicted savings are exact.
#pragma once

#include "plan/plan.h"

#include <filesystem>

namespace moeatlas {

class Checkpoint;

// Reads config.json and the tensor headers (no tensor data) of `dir`: top-k, groups
// (config "n_group"), model type and per-layer expert costs from the Inventory.
PlanContext planContextFor(const Checkpoint& checkpoint);

} // namespace moeatlas
