// Internal to core/eval: what evaluateVariants adds to a table for routing rules (eval_routing.cpp).
#pragma once

#include "eval/eval.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moeatlas::eval_internal {

// What a token's routing costs in parameters: everything but the routed experts (as
// Inventory::activeParamsPerToken counts it) plus, per MoE layer, one routed expert's parameters for
// each expert the token is routed to.
struct RoutingCosts {
    double fixedActive = 0; // active parameters per token without the routed experts
    double norms = 0; // norm weights: element-wise, not part of the FLOPs
    std::vector<double> expertParams; // per MoE layer (model order): one routed expert at full width
};

RoutingCosts routingCosts(const Checkpoint& checkpoint, const ModelSpec& spec);

// Mean experts per token and layer, their histogram, active parameters and FLOPs per token of variant
// v in every domain, from the experts each token was routed to ([numMoeLayers, T]). A dimension plan's
// experts count with their kept experts' mean width.
void addRoutingCosts(EvalTable& table, std::size_t v, const EvalVariant& variant, const std::vector<uint16_t>& used,
    const EvalTokens& tokens, const ModelSpec& spec, const RoutingCosts& costs);

// equalCostNll: per dynamic-k variant and domain, its base's fixed top-k ladder (the base at the
// model's k and "<base>+top-k:K") interpolated linearly at the variant's mean experts per token.
void fillEqualCost(EvalTable& table);

} // namespace moeatlas::eval_internal
