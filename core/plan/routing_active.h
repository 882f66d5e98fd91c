// Active parameters per token of a plan when a routing rule gives each MoE layer's tokens a mean k
// other than the model's top-k (checkpoint/routing_rule.h; the mean k per layer predicted from an
// atlas's recorded logits by metrics/routing_rule_stats.h).
#pragma once

#include "plan/plan.h"

#include <vector>

namespace moeatlas {

// The routed-expert weights one token runs in MoE layer i of `plan` per expert it is routed to:
// expertParams[i] - routerRowParams (the router row is counted once per kept expert, not per routed
// one); a dimension plan's kept experts with their mean kept width, as plan costs count them.
double activeParamsPerRoutedExpert(const Plan& plan, const PlanContext& ctx, std::size_t i);

// plan.activeParamsAfter with the top-k routed experts of layer i replaced by meanK[i] of them:
// activeParamsAfter + sum_i (meanK[i] - top-k) * activeParamsPerRoutedExpert(i). Throws InputError
// when the plan has no costs (activeParamsBefore 0) or meanK does not have one entry per MoE layer.
double predictedActiveParams(const Plan& plan, const PlanContext& ctx, const std::vector<double>& meanK);

} // namespace moeatlas
