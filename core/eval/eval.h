// Evaluation of pruning plans without exporting them: per-domain next-token loss and perplexity of
// the full model and of plans applied as router masks (the router renormalises over the kept
// experts exactly as the exported checkpoint's router does), and budget sweeps that build the
// specialist-vs-generalist trade-off table (PreMoE, arXiv 2505.17639) as CSV and in the atlas.
#pragma once

#include "atlas/atlas_file.h"
#include "plan/plan.h"
#include "runtime/executor.h"
#include "util/file_lock.h"
#include "util/progress.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace moeatlas {

class Checkpoint;
struct CalibrationSet;
struct ModelSpec;

// One model evaluated: the full model (no mask) or a plan.
struct EvalVariant {
    std::string name; // unique in a table, e.g. "full", "specialist:code/peu@0.50"
    std::string method; // full | specialist | generalist | union | random | plan
    std::string criterion; // scores the plan was ranked by; empty for full and random
    std::string domain; // target domain of a specialist; empty otherwise
    // Fraction of the routed experts' intermediate units (hence of their weights) dropped, over all
    // MoE layers: for expert-only plans the fraction of routed experts dropped.
    double sparsity = 0;
    int64_t keptExperts = 0; // routed experts kept (zero-width ones included), over all MoE layers
    ExpertMask mask; // empty keep map = the full model; units set for dimension plans; mask.routing its rule
    // The routing rule's name (RoutingRule::name(), "model" for the model's own top-k); what a table
    // read back from an atlas keeps of mask.routing.
    std::string routing = "model";
    // The variant this one routes differently ("full", a plan's name); empty for a variant of its own.
    std::string base;
    // Speculative execution (mask.speculative): SpeculativeExecution::name(), e.g. "next-router" or
    // "quasi-hidden:2"; empty for a variant that routes by its own routers. What a table read back keeps of it.
    std::string speculative;
};

// The token set variants are evaluated on: each sequence belongs to one domain.
struct EvalTokens {
    std::vector<std::string> domains;
    std::vector<int32_t> tokens;
    std::vector<int64_t> seqOffsets; // [S + 1]
    std::vector<int> seqDomain; // [S], index into domains
    std::string source; // "atlas <path>" or "calibration <domains>", recorded with the results
};

// The atlas's own calibration tokens (a complete atlas; InputError otherwise).
EvalTokens evalTokensFromAtlas(const AtlasFile& atlas);
// Packed calibration sets (held-out text, e.g. from loadCalibration in runtime/capture.h).
EvalTokens evalTokensFromCalibration(const CalibrationSet& calibration);
// The first `perDomain` sequences of every domain, in order (all when perDomain <= 0).
EvalTokens firstSequencesPerDomain(const EvalTokens& all, int64_t perDomain);

// The unpruned model.
EvalVariant fullVariant(const ModelSpec& spec);
// The variant that applies a plan (method, criterion, domain and sparsity taken from it), its
// dimension pruning included (ExpertMask::units). Throws InputError naming the variant when the
// plan does not fit the model (expert count, expert ids, intermediate size, malformed units).
EvalVariant variantFromPlan(const Plan& plan, const ModelSpec& spec, const std::string& name);
// A plan file (moeatlas plan) as a variant named after the file. Throws InputError when the plan
// was made from an atlas of another checkpoint (its config SHA-256 is not `configSha256`).
EvalVariant variantFromPlanFile(
    const std::filesystem::path& file, const ModelSpec& spec, const std::string& configSha256);

// Which plans a sweep compiles for every sparsity (each in (0, 1)).
struct SweepOptions {
    std::vector<double> sparsities;
    std::vector<std::string> criteria { "peu" };
    bool specialists = true; // one per atlas domain and criterion
    bool generalist = true; // pooled token-weighted generalist per criterion
    int randomPlans = 0; // uniformly random plans per sparsity (seeds seed, seed + 1, ...)
    uint64_t seed = 0;
    BudgetScope scope = BudgetScope::Uniform;
};

// Plans of a sweep, compiled from the atlas's /scores/<criterion> groups (moeatlas score) with the
// checkpoint's costs. Names: "<method>[:<domain>]/<criterion>@<sparsity>", "random#<i>@<sparsity>"
// (sparsity with two decimals: sparsities that round alike are refused). Criterion names may use
// '-' for '_' (act-logits).
std::vector<EvalVariant> sweepVariants(const std::filesystem::path& atlas, const Checkpoint& checkpoint,
    const ModelSpec& spec, const SweepOptions& options);

// Every variant once more with each routing rule (checkpoint/routing_rule.h), named
// "<variant>+<rule>"; with a dynamic rule among them, also the fixed top-k ladder each dynamic rule is
// compared with at equal cost: "<variant>+top-k:K" for every K from the rules' smallest k to their
// largest (the model's own k is the variant itself). Threshold rules must be calibrated already.
std::vector<EvalVariant> withRoutingRules(
    const std::vector<EvalVariant>& variants, const std::vector<RoutingRule>& rules, const ModelSpec& spec);

// Speculative execution (runtime/executor.h, SpeculativeExecution) parsed from "<predictor>[:<lookahead>]"
// (prefetch_data.h's predictor names; lookahead in MoE layers, default 1) and filled from the atlas: frequency
// orders from its routing (training split), quasi-hidden's default vectors and the learned estimators from
// /prefetch. next-router, previous and oracle need no atlas (`atlas` may be null). RequestError("speculative")
// naming the text for an unknown predictor, a lookahead that leaves no MoE layer to speculate, a predictor that
// needs an atlas without one, or an atlas that did not record it (with "--atlas" / "capture --prefetch").
SpeculativeExecution parseSpeculative(const std::string& text, const ModelSpec& spec, const AtlasFile* atlas);

// Every variant routed by the model's own top-k (no routing rule, not speculative) once more with each
// speculative execution, named "<variant>+spec:<name>", base the variant.
std::vector<EvalVariant> withSpeculative(
    const std::vector<EvalVariant>& variants, const std::vector<SpeculativeExecution>& speculative);

// Uniformly random experts per MoE layer (keep = round((1 - sparsity) * E), at least top-k); the
// same seed gives the same plan on every platform.
EvalVariant randomVariant(const ModelSpec& spec, double sparsity, uint64_t seed, const std::string& name);

// Per-domain mean next-token loss of every variant on the token set.
struct EvalTable {
    std::vector<std::string> domains;
    std::vector<int64_t> predictedTokens; // per domain: positions with a next token
    std::vector<EvalVariant> variants;
    std::vector<std::vector<double>> nll; // [variant][domain], nats per predicted token
    // Routing cost per variant and domain, over every token of the domain and every MoE layer:
    std::vector<std::vector<double>> meanExperts; // experts a token is routed to, per MoE layer
    std::vector<std::vector<std::vector<double>>> expertsHistogram; // [v][d][k]: share of (token, layer) with k
    std::vector<std::vector<double>> activeParams; // parameters a token uses (docs/methods.md)
    std::vector<std::vector<double>> flopsPerToken; // 2 x the matrix parameters a token multiplies
    // nll of the variant's base under fixed top-k at the same mean experts per token (linear between
    // the two nearest K of the ladder); NaN for fixed-k variants and means outside the ladder.
    std::vector<std::vector<double>> equalCostNll;
    std::string tokenSource;
    std::string checkpoint;
    std::string computeDtype;
    double seconds = 0;

    // Index of the full-model variant, or -1.
    int fullIndex() const;
    // Index of variant v's base (EvalVariant::base), or -1 when it has none or the table does not hold it.
    int baseIndex(std::size_t v) const;
};

// Evaluates the variants, as many at once as fit in memory (each layer is read once per group).
// Progress units: tokens x layers x variants. Cancelled propagates; nothing is written here.
EvalTable evaluateVariants(const Checkpoint& checkpoint, const ModelSpec& spec, const ExecutorOptions& options,
    const EvalTokens& tokens, std::vector<EvalVariant> variants, const ProgressFn& progress = {},
    const StopToken* stop = nullptr);

// One row per (variant, domain): variant,method,criterion,target_domain,sparsity,kept_experts,
// domain,tokens,nll,perplexity,delta_nll (vs the full model when it is in the table, else empty),
// routing,mean_experts,active_params,flops_per_token,equal_cost_topk_nll,delta_vs_equal_cost,
// experts_histogram ("k:share" pairs joined by ';'),speculative (SpeculativeExecution::name() or empty),
// delta_vs_base (nll minus the nll of the variant's base when it is in the table, else empty).
std::string evalTableCsv(const EvalTable& table);

// The table as an atlas result group (docs/atlas-format.md, "Evaluation tables").
AtlasResults evalTableResults(const EvalTable& table);
// The inverse of evalTableResults: a table read back from an atlas (variants with their kept experts;
// dimension plans' unit lists are not stored, only widths). `source` names the group in messages.
// Throws InputError naming it when params or arrays are missing or their shapes disagree.
EvalTable evalTableFromResults(const AtlasResults& results, const std::string& source);

// Stores the table in a complete atlas as /evaluation/<label> (copy, write, atomic rename: a failure
// leaves the atlas as it was).
// `wait`: how to wait for another update of the atlas (util/file_lock.h; default: up to 10 minutes).
void storeEvalTable(
    const std::filesystem::path& atlas, const std::string& label, const EvalTable& table, const LockWait& wait = {});

} // namespace moeatlas
