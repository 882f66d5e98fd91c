// From sums and counts to the result groups stored in the atlas, and the `score` driver with
// its "recompute only when the inputs changed" check.
#include "metrics/scores.h"

#include "util/error.h"
#include "util/sha256.h"
#include "util/splitmix64.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace moeatlas {

namespace {

uint64_t dim(int n)
{
    return static_cast<uint64_t>(n);
}

// value[d] = sums[d] / counts[d] per (layer, expert) for each domain, and a pooled row
// sum_d sums / sum_d counts (a token-weighted mean when counts are token counts); 0 / 0 = 0.
std::vector<double> ratioWithPooled(
    const ScoreAccumulator& acc, const std::vector<double>& sums, const std::vector<double>& counts)
{
    const size_t le = static_cast<size_t>(acc.numLayers) * acc.numExperts;
    const size_t numD = static_cast<size_t>(acc.numDomains);
    std::vector<double> value((numD + 1) * le, 0.0);
    for (size_t i = 0; i < le; ++i) {
        double s = 0.0, c = 0.0;
        for (size_t d = 0; d < numD; ++d) {
            const double sd = sums[d * le + i], cd = counts[d * le + i];
            value[d * le + i] = cd > 0 ? sd / cd : 0.0;
            s += sd;
            c += cd;
        }
        value[numD * le + i] = c > 0 ? s / c : 0.0;
    }
    return value;
}

// Token counts [D, L] broadcast to [D, L, E].
std::vector<double> tokensPerExpert(const ScoreAccumulator& acc)
{
    std::vector<double> counts(acc.tokens.size() * static_cast<size_t>(acc.numExperts));
    for (size_t i = 0; i < acc.tokens.size(); ++i)
        std::fill_n(counts.begin() + static_cast<std::ptrdiff_t>(i * acc.numExperts), acc.numExperts, acc.tokens[i]);
    return counts;
}

// splitmix64 of (seed, slot * E + expert + 1), i.e. the first draw of a generator started at
// seed + index * golden: reproducible in numpy without a shared RNG.
double randomScore(uint64_t seed, uint64_t index)
{
    return SplitMix64(seed + index * SplitMix64::kGolden).uniform();
}

} // namespace

const std::vector<std::string>& allCriteria()
{
    static const std::vector<std::string> names { "peu", "frequency", "act_logits", "all_logits", "soft_mass", "reap",
        "ean", "random", "probmoe_marginal" };
    return names;
}

bool criterionAvailable(const ScoreAccumulator& acc, const std::string& criterion)
{
    if (std::find(allCriteria().begin(), allCriteria().end(), criterion) == allCriteria().end())
        return false;
    return acc.hasNorms || (criterion != "reap" && criterion != "ean");
}

std::string criterionParamsJson(const ResolvedParams& p, const std::string& criterion)
{
    nlohmann::ordered_json j;
    j["criterion"] = criterion;
    if (criterion == "peu") {
        j["pool_k"] = p.poolK;
        j["transform"] = peuTransformName(p.transform);
        j["threshold"] = "adaptive: mean top-1 local pool probability per (domain, layer)";
        j["reference"] = "PreMoE, arXiv 2505.17639 v3";
    } else if (criterion == "act_logits") {
        j["pool_k"] = p.poolK;
    } else if (criterion == "random") {
        j["seed"] = p.seed;
    } else if (criterion == "probmoe_marginal") {
        j["p"] = "sigmoid(raw router logit)";
        j["k"] = "the model's top_k";
        j["reference"] = "ProbMoE, arXiv 2606.01509";
    }
    return j.dump();
}

std::string statisticsParamsJson(const ResolvedParams& p)
{
    nlohmann::ordered_json j;
    j["dynamic_k_band"] = { p.bandMin, p.bandMax };
    j["entropy_normalisation"] = "log(E)";
    j["m99_mass"] = 0.99;
    return j.dump();
}

AtlasResults criterionResults(const ScoreAccumulator& acc, const std::string& criterion, const std::string& inputsHash)
{
    if (!criterionAvailable(acc, criterion))
        throw InputError("criterion \"" + criterion
            + "\" is unknown or needs expert output "
              "norms the atlas does not hold");
    AtlasResults r;
    r.paramsJson = criterionParamsJson(acc.params, criterion);
    r.inputsHash = inputsHash;
    const uint64_t numD = dim(acc.numDomains), numL = dim(acc.numLayers), numE = dim(acc.numExperts);
    auto additive = [&](const std::vector<double>& sums, const std::vector<double>& counts) {
        r.arrays.push_back({ "value", { numD + 1, numL, numE }, ratioWithPooled(acc, sums, counts) });
        r.arrays.push_back({ "sums", { numD, numL, numE }, sums });
        r.arrays.push_back({ "counts", { numD, numL, numE }, counts });
    };
    const std::vector<double> tokens = tokensPerExpert(acc);
    if (criterion == "peu") {
        additive(acc.peuSum, tokens);
        std::vector<double> threshold(acc.tokens.size(), 0.0);
        for (size_t i = 0; i < threshold.size(); ++i)
            threshold[i] = acc.tokens[i] > 0 ? acc.peuTopProbSum[i] / acc.tokens[i] : 0.0;
        r.arrays.push_back({ "threshold", { numD, numL }, threshold });
        r.arrays.push_back({ "threshold_sums", { numD, numL }, acc.peuTopProbSum });
        r.arrays.push_back({ "threshold_counts", { numD, numL }, acc.tokens });
    } else if (criterion == "frequency") {
        additive(acc.selectCount, tokens);
    } else if (criterion == "act_logits") {
        additive(acc.actLogitSum, tokens);
    } else if (criterion == "all_logits") {
        additive(acc.allLogitSum, tokens);
    } else if (criterion == "soft_mass") {
        additive(acc.softMassSum, tokens);
    } else if (criterion == "reap") {
        additive(acc.gatedNormSum, acc.selectCount);
    } else if (criterion == "ean") {
        additive(acc.normSum, tokens);
    } else if (criterion == "probmoe_marginal") {
        std::vector<double> sums(acc.selectCount.size());
        for (size_t i = 0; i < acc.probmoe.size(); ++i)
            std::copy(acc.probmoe[i].marginal.begin(), acc.probmoe[i].marginal.end(),
                sums.begin() + static_cast<std::ptrdiff_t>(i * static_cast<size_t>(acc.numExperts)));
        additive(sums, tokens);
    } else { // random
        std::vector<double> value((numD + 1) * numL * numE);
        for (size_t i = 0; i < value.size(); ++i)
            value[i] = randomScore(acc.params.seed, i % (numL * numE));
        r.arrays.push_back({ "value", { numD + 1, numL, numE }, std::move(value) });
    }
    return r;
}

std::string atlasFingerprint(const AtlasFile& atlas)
{
    const AtlasModelInfo& m = atlas.model();
    nlohmann::ordered_json j;
    j["config_sha256"] = m.configSha256;
    j["moe_layers"] = m.moeLayers;
    j["completed_layers"] = atlas.completedLayers();
    j["num_experts"] = m.numExperts;
    j["top_k"] = m.topK;
    j["num_tokens"] = atlas.numTokens();
    j["logit_storage"] = atlas.options().logitStorage == LogitStorage::Float16 ? "float16" : "float32";
    j["expert_norms"] = atlas.options().storeExpertNorms;
    for (const AtlasDomain& d : atlas.calibration().domains)
        j["domains"].push_back({ d.name, d.numTokens });
    const std::vector<int32_t> tokens = atlas.tokens();
    const std::vector<int16_t> domains = atlas.domainIds();
    j["tokens_sha256"]
        = sha256Hex(std::string_view(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(int32_t)));
    j["domain_ids_sha256"]
        = sha256Hex(std::string_view(reinterpret_cast<const char*>(domains.data()), domains.size() * sizeof(int16_t)));
    return sha256Hex(j.dump());
}

std::string inputsHash(const std::string& fingerprint, const std::string& group, const std::string& paramsJson)
{
    return sha256Hex("moeatlas-scores-1\n" + fingerprint + "\n" + group + "\n" + paramsJson);
}

ScoreRunReport scoreAtlasFile(const std::filesystem::path& path, const ScoreParams& params,
    const ScoreRunOptions& options, const ProgressFn& progress, const StopToken* stop)
{
    ScoreRunReport report;
    std::vector<std::string> criteria;
    ScoreAccumulator acc;
    std::vector<std::pair<std::string, std::string>> groups; // group, hash
    {
        AtlasFile atlas = AtlasFile::openReadOnly(path);
        if (!atlas.isComplete())
            throw InputError(
                path.string() + ": the atlas is not complete; resume the interrupted capture before scoring");
        const ResolvedParams resolved = resolveParams(params, atlas.model().numExperts, atlas.model().topK);
        const bool norms = atlas.options().storeExpertNorms;
        for (const std::string& c : options.criteria.empty() ? allCriteria() : options.criteria) {
            if (std::find(allCriteria().begin(), allCriteria().end(), c) == allCriteria().end())
                throw InputError("unknown criterion \"" + c + "\"");
            if (!norms && (c == "reap" || c == "ean")) {
                report.skipped.push_back(c); // needs /layers/<l>/expert_norms
                continue;
            }
            criteria.push_back(c);
        }
        const std::string fingerprint = atlasFingerprint(atlas);
        bool upToDate = true;
        for (const std::string& c : criteria) {
            const std::string group = "scores/" + c;
            groups.emplace_back(group, inputsHash(fingerprint, group, criterionParamsJson(resolved, c)));
        }
        if (options.statistics)
            groups.emplace_back("statistics", inputsHash(fingerprint, "statistics", statisticsParamsJson(resolved)));
        if (options.probmoe)
            groups.emplace_back(
                "probmoe", inputsHash(fingerprint, "probmoe", probmoeParamsJson(resolved, atlas.model().topK)));
        for (const auto& [group, hash] : groups) {
            const auto stored = atlas.readResults(group);
            upToDate = upToDate && stored && stored->inputsHash == hash;
        }
        if (upToDate && !options.force) {
            report.upToDate = true;
            return report;
        }
        acc = accumulateScores(atlas, params, progress, stop);
    }
    LockWait wait = options.lockWait;
    if (!wait.onWait)
        wait.onWait = reportingLockWait(progress, stop).onWait;
    AtlasFile update = AtlasFile::openForUpdate(path, wait);
    for (const auto& [group, hash] : groups) {
        if (group == "statistics")
            update.writeResults(group, statisticsResults(acc, hash));
        else if (group == "probmoe")
            update.writeResults(group, probmoeResults(acc, hash));
        else
            update.writeResults(group, criterionResults(acc, group.substr(7), hash));
        report.written.push_back(group);
    }
    update.commitUpdate();
    return report;
}

} // namespace moeatlas
