// Expert scores and routing statistics computed from an atlas's router records.
//
// Everything is accumulated as fp64 SUMS and COUNTS per (domain, MoE layer, expert) in a plain
// ScoreAccumulator, so accumulators of atlases recorded on separate machines add exactly
// (operator+=); values are ratios of those sums, and the pooled ("generalist") row divides
// the sums over all domains by the counts over all domains (a token-weighted mean).
//
// Criteria (value arrays [D+1, L_moe, E], row D = pooled):
//   peu         PreMoE's Predicted Expert Utility (arXiv 2505.17639 v3, "PreMoE: Proactive
//               Inference for Efficient Mixture-of-Experts"): top-K_a pool of the raw logits,
//               local softmax over the pool, adaptive threshold r_l = mean top-1 local
//               probability per (domain, layer), transform f, plain mean over all tokens.
//   frequency   fraction of the domain's tokens whose recorded top-k holds the expert.
//   act_logits  PreMoE's "Act-Logits" ablation: mean over tokens of s_j * [j in top-K_a pool].
//   all_logits  PreMoE's "All-Logits" ablation: mean raw logit.
//   soft_mass   mean softmax probability over all experts.
//   reap        REAP (Cerebras, "Router-weighted Expert Activation Pruning"): mean over tokens
//               routed to j of g_j(x) * ||E_j(x)||_2 (needs /layers/<l>/expert_norms).
//   ean         expert activation norm: sum of ||E_j(x)|| over routed tokens divided by the
//               domain's token count (our choice: a per-token mean, so it stays additive).
//   random      seeded uniform [0, 1) per (layer, expert), identical for every domain.
//   probmoe_marginal  ProbMoE (arXiv 2606.01509): mean over tokens of the exact-k marginal
//               P(z_j = 1 | sum z = k) of independent Bernoullis p_i = sigmoid(raw logit_i),
//               k = the model's top-k (a soft utilisation; sums to k over the experts).
//
// The same pass fills the ProbMoE exact-k tables of the /probmoe group (probmoeResults): per
// (domain, layer) exact-k marginals, the probability of the recorded top-k set, the cardinality
// distribution over the dynamic-k band and k* (docs/methods.md, "Exact-k tables in the atlas").
#pragma once

#include "atlas/atlas_file.h"
#include "metrics/exact_k.h"
#include "util/file_lock.h"
#include "util/progress.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

namespace moeatlas {

enum class PeuTransform { MaxSigmoid, Sigmoid, Exp, Identity };

// "max-sigmoid", "sigmoid", "exp", "identity"; parse throws InputError on anything else.
std::string peuTransformName(PeuTransform f);
PeuTransform parsePeuTransform(const std::string& name);
double applyPeuTransform(PeuTransform f, double s);

struct PeuParams {
    int poolK = 0; // K_a; 0 = the model's top-k
    PeuTransform transform = PeuTransform::MaxSigmoid;
};

struct ScoreParams {
    PeuParams peu;
    int bandMin = 0; // dynamic-k band [bandMin, bandMax] of /statistics and /probmoe; 0 = [max(1, k-2), k]
    int bandMax = 0; //   (ProbMoE's defaults: OLMoE k=8 -> 6..8, Qwen1.5 k=4 -> 2..4); RequestError "band"
    uint64_t seed = 0; // for the random baseline
    int64_t blockTokens = 4096; // tokens read per HDF5 call
    int threads = 0; // worker threads over layers; 0 = hardware_concurrency
};

// Resolved parameters: defaults replaced by the model's values, checked against it.
struct ResolvedParams {
    int poolK = 0;
    PeuTransform transform = PeuTransform::MaxSigmoid;
    int bandMin = 0;
    int bandMax = 0;
    uint64_t seed = 0;
};
// Throws RequestError("poolK") or RequestError("band") naming the values and the expected range.
ResolvedParams resolveParams(const ScoreParams& params, int numExperts, int topK);

// Sums and counts of one atlas. Index helpers give flat row-major offsets.
struct ScoreAccumulator {
    int numDomains = 0, numLayers = 0, numExperts = 0, topK = 0;
    ResolvedParams params;
    bool hasNorms = false;
    std::vector<std::string> domainNames;

    std::vector<double> tokens; // [D, L] tokens seen
    std::vector<double> peuTopProbSum; // [D, L] sum of max local pool probability (PEU pass 1)
    std::vector<double> peuSum; // [D, L, E] masked transformed logits (PEU pass 2)
    std::vector<double> selectCount; // [D, L, E] tokens whose recorded top-k holds e
    std::vector<double> actLogitSum; // [D, L, E]
    std::vector<double> allLogitSum; // [D, L, E]
    std::vector<double> softMassSum; // [D, L, E]
    std::vector<double> normSum; // [D, L, E] sum ||E_e(x)|| over routed tokens
    std::vector<double> gatedNormSum; // [D, L, E] sum g_e(x) ||E_e(x)|| over routed tokens
    std::vector<double> entropySum; // [D, L] sum of normalised token routing entropy
    std::vector<double> m99Hist; // [D, L, E] tokens with m99 = m at index m-1
    std::vector<double> coactivation; // [D, L, E, E] tokens with both i and j in top-k
    std::vector<double> dynamicKHist; // [D, L, B] tokens with k* = bandMin + b
    // Distinct recorded top-k sets per (domain, layer): sorted ids -> token count.
    std::vector<std::unordered_map<std::string, double>> patterns; // [D * L]
    // ProbMoE exact-k sums per (domain, layer), k = topK, band [bandMin, bandMax]. [D * L]
    std::vector<ExactKSums> probmoe;

    void reset(int domains, int layers, int experts, int k, const ResolvedParams& p, bool norms);
    int bandBins() const { return params.bandMax - params.bandMin + 1; }
    ExactKParams exactKParams() const { return { params.bandMin, params.bandMax, topK }; }
    size_t dl(int d, int l) const { return static_cast<size_t>(d) * numLayers + l; }
    size_t dle(int d, int l, int e) const { return dl(d, l) * numExperts + e; }

    // Adds another atlas's accumulator of the same model and parameters (throws InputError
    // otherwise). Exact for everything except peuSum, whose mask depends on r_l: PEU of merged
    // atlases is recomputed by scoring the merged atlas (r_l's sums and counts do add).
    ScoreAccumulator& operator+=(const ScoreAccumulator& other);
};

// Streams every MoE layer of `atlas` (complete layers required) in token blocks, threads over
// layers. progress.done counts tokens x layers; a false return or `stop` throws Cancelled.
ScoreAccumulator accumulateScores(const AtlasFile& atlas, const ScoreParams& params, const ProgressFn& progress = {},
    const StopToken* stop = nullptr);

// The criteria this build knows, in display order.
const std::vector<std::string>& allCriteria();
// Criteria that can be computed for this accumulator (reap/ean need expert norms).
bool criterionAvailable(const ScoreAccumulator& acc, const std::string& criterion);

// Result groups as written to the atlas (docs/atlas-format.md, "Scores and statistics").
AtlasResults criterionResults(const ScoreAccumulator& acc, const std::string& criterion, const std::string& inputsHash);
AtlasResults statisticsResults(const ScoreAccumulator& acc, const std::string& inputsHash);
std::string criterionParamsJson(const ResolvedParams& p, const std::string& criterion);
std::string statisticsParamsJson(const ResolvedParams& p);
// The /probmoe group (docs/atlas-format.md, "ProbMoE exact-k tables").
AtlasResults probmoeResults(const ScoreAccumulator& acc, const std::string& inputsHash);
std::string probmoeParamsJson(const ResolvedParams& p, int topK);

// Identity of the inputs: model, tokens, domains, completed layers (not the logits' bytes:
// an atlas is write-once, and those determine which records it holds).
std::string atlasFingerprint(const AtlasFile& atlas);
std::string inputsHash(const std::string& fingerprint, const std::string& group, const std::string& paramsJson);

struct ScoreRunOptions {
    std::vector<std::string> criteria; // empty = every available criterion
    bool statistics = true;
    bool probmoe = true; // the /probmoe exact-k tables
    bool force = false; // recompute even when the stored hashes match
    // Another update of the atlas in progress: wait for it (util/file_lock.h). Unset onWait: the
    // progress callback reports the wait and a stop request ends it.
    LockWait lockWait;
};

struct ScoreRunReport {
    bool upToDate = false; // nothing recomputed
    std::vector<std::string> written; // result groups written ("scores/peu", "statistics", "probmoe")
    std::vector<std::string> skipped; // requested but unavailable (e.g. reap without norms)
};

// Scores a complete atlas file and writes the results into it (through openForUpdate). The CLI's
// `moeatlas score` and the workbench's "Score atlas" job both call this. Parameters are checked
// before anything is read or written (RequestError as resolveParams; unknown criteria InputError).
ScoreRunReport scoreAtlasFile(const std::filesystem::path& path, const ScoreParams& params,
    const ScoreRunOptions& options, const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
