// moeatlas score <atlas>: expert scores (PEU and baselines), routing statistics and ProbMoE's exact-k
// tables, written into the atlas (docs/atlas-format.md, "Scores and statistics"); prints a short summary.
#include "cli_progress.h"
#include "commands.h"
#include "request_flags.h"

#include "atlas/atlas_file.h"
#include "metrics/scores.h"
#include "util/error.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>

namespace moeatlas::cli {

namespace {

// ScoreParams' fields (core/metrics/scores.h) as the CLI sets them.
const FieldFlags kScoreFlags { { "band", "--dynamic-k-band" }, { "poolK", "--peu-pool-k" } };

struct ScoreArgs {
    std::string atlas;
    std::string criteria;
    int poolK = 0;
    std::string transform = "max-sigmoid";
    std::string band;
    uint64_t seed = 0;
    int threads = 0;
    int topExperts = 3;
    bool force = false;
};

std::vector<std::string> splitList(const std::string& text)
{
    std::vector<std::string> out;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');)
        if (!item.empty())
            out.push_back(item == "act-logits"   ? "act_logits"
                    : item == "all-logits"       ? "all_logits"
                    : item == "soft-mass"        ? "soft_mass"
                    : item == "probmoe-marginal" ? "probmoe_marginal"
                                                 : item);
    return out;
}

void printSummary(const AtlasFile& atlas, int topExperts)
{
    const auto peu = atlas.readResults("scores/peu");
    const auto stats = atlas.readResults("statistics");
    const AtlasModelInfo& m = atlas.model();
    const auto& domains = atlas.calibration().domains;
    const size_t numL = m.moeLayers.size(), numE = static_cast<size_t>(m.numExperts);
    for (size_t row = 0; row <= domains.size(); ++row) {
        const std::string name = row < domains.size() ? domains[row].name : "pooled (generalist)";
        std::printf("%s\n  %-6s %-*s %8s %8s %8s\n", name.c_str(), "layer", topExperts * 14,
            "top experts by PEU (expert:score)", "CV", "MaxVio", "m99");
        for (size_t l = 0; l < numL; ++l) {
            std::string top;
            if (peu && peu->find("value")) {
                const double* v = peu->find("value")->values.data() + (row * numL + l) * numE;
                std::vector<int> order(numE);
                std::iota(order.begin(), order.end(), 0);
                const size_t n = std::min<size_t>(static_cast<size_t>(topExperts), numE);
                std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&](int a, int b) { return v[a] > v[b]; });
                for (size_t i = 0; i < n; ++i) {
                    char buf[32];
                    std::snprintf(buf, sizeof buf, "%d:%.3f ", order[i], v[order[i]]);
                    top += buf;
                }
            }
            auto stat = [&](const char* array) {
                const AtlasArray* a = stats ? stats->find(array) : nullptr;
                return a ? a->values[row * numL + l] : 0.0;
            };
            std::printf("  %-6d %-*s %8.3f %8.3f %8.2f\n", m.moeLayers[l], topExperts * 14, top.c_str(),
                stat("load_cv"), stat("load_max_vio"), stat("m99_mean"));
        }
    }
}

int runScore(const ScoreArgs& a)
{
    ScoreParams params;
    params.peu.poolK = a.poolK;
    params.peu.transform = parsePeuTransform(a.transform);
    params.seed = a.seed;
    params.threads = a.threads;
    if (!a.band.empty()) {
        const size_t colon = a.band.find(':');
        try {
            if (colon == std::string::npos)
                throw std::invalid_argument("no colon");
            params.bandMin = std::stoi(a.band.substr(0, colon));
            params.bandMax = std::stoi(a.band.substr(colon + 1));
        } catch (const std::exception&) {
            throw InputError("--dynamic-k-band: '" + a.band + "' (expected MIN:MAX, e.g. 2:4)");
        }
        if (params.bandMin < 1 || params.bandMax < 1) // 0 is core's "default", not a band a user can ask for
            throw InputError(
                "--dynamic-k-band: band " + a.band + " must satisfy 1 <= min <= max <= the number of experts");
    }
    ScoreRunOptions options;
    options.criteria = splitList(a.criteria);
    options.force = a.force;

    StopToken& stop = installStopHandler();
    ProgressBar bar("score", "token-layers");
    const ScoreRunReport report = namingFlags(kScoreFlags, [&] {
        return scoreAtlasFile(
            a.atlas, params, options, [&](const Progress& p) { return bar.update(p); }, &stop);
    });
    if (report.upToDate)
        bar.finish("score: up to date (use --force to recompute)");
    else
        bar.finish("score: wrote " + std::to_string(report.written.size()) + " result groups");
    for (const std::string& c : report.skipped)
        std::fprintf(stderr,
            "moeatlas: note: %s skipped: the atlas has no expert output norms "
            "(capture with --expert-norms)\n",
            c.c_str());
    printSummary(AtlasFile::openReadOnly(a.atlas), a.topExperts);
    return 0;
}

} // namespace

Command addScoreCommand(CLI::App& app)
{
    auto args = std::make_shared<ScoreArgs>();
    CLI::App* sub
        = app.add_subcommand("score", "Expert scores (PEU, baselines) and routing statistics, written into the atlas");
    sub->add_option("atlas", args->atlas, "Complete atlas file (.atlas.h5)")->required();
    sub->add_option("--criteria", args->criteria,
        "Comma-separated: peu,frequency,act_logits,all_logits,soft_mass,reap,ean,"
        "random,probmoe_marginal (default: all available)");
    sub->add_option("--peu-pool-k", args->poolK, "PEU top-K_a pool size (0 = the model's top-k)");
    sub->add_option("--peu-transform", args->transform, "PEU transform: max-sigmoid (default), sigmoid, exp, identity");
    sub->add_option("--dynamic-k-band", args->band,
        "Dynamic-k band MIN:MAX of /statistics and the /probmoe exact-k tables (default max(1,k-2):k)");
    sub->add_option("--seed", args->seed, "Seed of the random baseline");
    sub->add_option("--threads", args->threads, "Worker threads (0 = all cores)");
    sub->add_option("--top", args->topExperts, "Experts listed per layer in the summary");
    sub->add_flag("--force", args->force, "Recompute even when the stored results are up to date");
    return [args] { return runScore(*args); };
}

} // namespace moeatlas::cli
