// How many experts each token is routed to: the model's own top-k, or a rule that gives every token
// its own k (docs/methods.md, "Dynamic-k routing"; ProbMoE, arXiv 2606.01509). Plain C++: the engine
// applies a rule in its MoE block, evaluation compares rules, export writes one into a checkpoint.
//
// Every rule keeps the model's weights: softmax over all (kept) experts, the top maxK() gathered, the
// slots past the token's k dropped, the rest renormalised only where the model renormalises its top-k.
//
//   model               the checkpoint's num_experts_per_tok
//   top-k:K             a fixed K for every token (1 <= K <= E)
//   probmoe:KMIN:KMAX   k* = clamp(#positive router logits, KMIN, KMAX): the argmax over the band of the
//                       prefix sums of the logits sorted descending (ProbMoE's dynamic-k rule)
//   top-p:P[:KMIN:KMAX] the smallest k whose top-k softmax mass reaches P in (0, 1], clamped to the band
//                       (default band [1, model k])
//   threshold:M[:KMIN:KMAX]  k = clamp(#experts with softmax probability >= t_l, KMIN, KMAX) with one
//                       threshold t_l per MoE layer calibrated on an atlas's recorded router logits so
//                       that the mean k of the layer is M (default band [1, model k])
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace moeatlas {

struct RoutingRule {
    enum class Kind { Model, TopK, ProbMoe, TopP, Threshold };
    Kind kind = Kind::Model;
    int k = 0; // TopK
    int kMin = 0; // band of ProbMoe, TopP and Threshold
    int kMax = 0;
    double p = 0.0; // TopP: routing mass
    double meanK = 0.0; // Threshold: the target mean k of every MoE layer
    // Threshold: decoder layer -> softmax probability threshold t_l (calibrateThresholds in
    // metrics/routing_rule_stats.h). Empty until calibrated; evaluation and export refuse a rule that lacks a MoE
    // layer's threshold.
    std::map<int, double> thresholds;

    bool isModel() const { return kind == Kind::Model; }
    // Every token gets the same k (model, top-k): an ordinary top-k router.
    bool fixed() const { return kind == Kind::Model || kind == Kind::TopK; }
    // Slots gathered per token: the largest k the rule can give.
    int maxK(int modelTopK) const;
    // The smallest k the rule can give.
    int minK(int modelTopK) const;
    // The rule as it is written ("probmoe:6:8", "top-p:0.9:1:8", "threshold:6:1:8", "top-k:6",
    // "model"); parseRoutingRule(name()) gives the rule back (thresholds aside).
    std::string name() const;
};

bool operator==(const RoutingRule& a, const RoutingRule& b);

// Parses the text above for a router of `numExperts` experts and top-k `modelTopK`. Throws
// RequestError("routing") naming the text and what was expected: an unknown rule, a band outside
// [1, E] or KMIN > KMAX, K outside [1, E], P outside (0, 1], M outside the band, trailing fields.
RoutingRule parseRoutingRule(const std::string& text, int numExperts, int modelTopK);

// The k a rule gives one token of one MoE layer: `sorted` holds the token's routing probabilities
// (softmax over the kept experts) sorted descending, at least maxK() of them, `positiveLogits` the
// number of its (kept) router logits > 0, `threshold` the layer's calibrated threshold (Threshold
// rules). The engine computes the same on tensors; this is the reference it is tested against and
// what calibration and the workbench's predictions use.
int ruleTokenK(const RoutingRule& rule, int modelTopK, const float* sorted, int positiveLogits, double threshold);

} // namespace moeatlas
