// How many experts a routing rule (checkpoint/routing_rule.h) gives the tokens an atlas recorded,
// predicted from the recorded router logits without running the model, and the calibration of the
// per-layer thresholds of a threshold:M rule (docs/methods.md, "Routing rules on recorded logits").
//
// Per token and MoE layer: p = softmax of the fp32 router logits over all experts, computed in fp32
// (max subtracted, exponentials summed in expert order, each divided by the sum), sorted descending;
// the count of logits > 0; k = ruleTokenK(rule, model top-k, p, count, t_l). The engine computes the
// same k on its own fp32 softmax, so a prediction can differ from an evaluation where a probability
// lies within a rounding of a threshold or of a top-p boundary, and where a plan masks experts (the
// prediction routes over all experts).
#pragma once

#include "atlas/atlas_file.h"
#include "checkpoint/routing_rule.h"
#include "util/progress.h"

#include <string>
#include <vector>

namespace moeatlas {

// k per token of one rule on one atlas: token counts and histograms per (domain, MoE layer), row D
// of the [D+1, ...] arrays pooled over the domains (sums of the domain rows).
struct RuleKStats {
    RoutingRule rule; // as applied: a threshold rule with its calibrated thresholds
    std::vector<std::string> domains; // D
    std::vector<int> layers; // decoder layer of each MoE layer (L)
    int modelTopK = 0;
    int maxK = 0; // histogram bins k = 0..maxK (rule.maxK(modelTopK))
    std::vector<double> tokens; // [D+1, L] tokens counted
    std::vector<double> kHist; // [D+1, L, maxK+1] tokens given k experts
    std::vector<double> kSum; // [D+1, L] sum of k over the tokens

    int rows() const { return static_cast<int>(domains.size()) + 1; }
    int pooledRow() const { return static_cast<int>(domains.size()); }
    // Mean k of (row, layer index 0..L-1); 0 when the row has no tokens.
    double meanK(int row, int layer) const;
    // [maxK+1] token counts of (row, layer index).
    std::vector<double> histogram(int row, int layer) const;
};

// Applies `rule` to every recorded token of every MoE layer (threads over layers, 0 = hardware
// concurrency). A threshold rule routes with the thresholds it holds (a layer without one with its
// KMAX, as the engine does): calibrate first. Throws RequestError("routing") when the atlas has no
// recorded router logits to read (a MoE layer not complete, or no tokens), naming the atlas and the
// /layers/<l>/router_logits group; Cancelled when `progress` returns false or `stop` is requested.
RuleKStats routingRuleStats(const AtlasFile& atlas, const RoutingRule& rule, const ProgressFn& progress = {},
    const StopToken* stop = nullptr, int threads = 0);

// For a Threshold rule, fills rule.thresholds with one softmax probability threshold t_l per MoE
// layer (decoder layer -> t_l): the t whose mean k over all the atlas's tokens (pooled over the
// domains, k clamped to the band) is closest to rule.meanK. Mean k is a non-increasing step function
// of t that changes only at the tokens' sorted probabilities in slots KMIN..KMAX-1, so every one of
// those values (and one just above the largest, giving KMIN to every token) is a candidate; the
// thresholds are these float values themselves, so the engine's comparison in double and this one
// agree exactly. Ties: of two candidates equally close to the target, the higher threshold (the
// smaller mean k) is taken. A band of one k leaves every t equivalent: t_l = 1. Other rules are left
// unchanged. Errors as routingRuleStats.
void calibrateThresholds(const AtlasFile& atlas, RoutingRule& rule, const ProgressFn& progress = {},
    const StopToken* stop = nullptr, int threads = 0);

} // namespace moeatlas
