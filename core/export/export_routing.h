// Internal to the exporter: a routing rule written into an export (docs/decisions.md, decision 29).
// A fixed rule (model, top-k:K) is a stock checkpoint whose num_experts_per_tok is K; a dynamic rule
// (probmoe, top-p, threshold) sets num_experts_per_tok to its largest k and describes itself in the
// config key `moeatlas_routing`, which modeling_moeatlas.py's routers read (trust_remote_code).
#pragma once

#include "checkpoint/model_spec.h"
#include "checkpoint/routing_rule.h"
#include "export/export_tensors.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace moeatlas {

// Checks that `rule` is a valid rule for the source model and that every MoE layer of the export
// keeps at least rule.maxK() experts (`planName` names the plan). Throws RequestError("routing")
// naming the rule and what was expected; a threshold rule needs a threshold in [0, 1] for every MoE
// layer and none for another layer (exportCheckpoint does not calibrate them: exportRouting does).
// The model rule is checked by the plan checks (keeps >= the model's top-k).
void checkExportRouting(
    const RoutingRule& rule, const ModelSpec& spec, const std::vector<LayerKeep>& keep, const std::string& planName);

// config.json of the export: num_experts_per_tok = rule.maxK() for every rule but model, and for a
// dynamic rule the `moeatlas_routing` object.
void writeRoutingConfig(const RoutingRule& rule, const ModelSpec& spec, nlohmann::json& config);

// The model card's "Routing" section.
std::string routingSection(const RoutingRule& rule, const ModelSpec& spec);

} // namespace moeatlas
