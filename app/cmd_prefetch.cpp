// moeatlas prefetch ATLAS: hit rates of expert prefetch predictors on the recorded routing (recorded
// predictors from /prefetch, derived ones computed), per predictor, source MoE layer, lookahead and
// domain; a summary table, a CSV and /prefetch_hit_rates in the atlas (docs/user-guide.md).
#include "cli_progress.h"
#include "commands.h"
#include "request_flags.h"

#include "util/error.h"
#include "workflows/prefetch_workflow.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace moeatlas::cli {

namespace {

struct PrefetchArgs {
    std::string atlas;
    std::vector<std::string> predictors;
    std::vector<int> lookaheads;
    int budget = 0;
    std::string csv;
    bool noStore = false;
};

const FieldFlags kPrefetchFlags { { "predictors", "--predictor" }, { "predictor", "--predictor" },
    { "lookaheads", "--lookahead" }, { "lookahead", "--lookahead" }, { "budget", "--budget" }, { "csv", "--csv" },
    { "store", { "", "or use --no-store" } } };

std::string rate(double v)
{
    if (std::isnan(v))
        return "-";
    char text[16];
    std::snprintf(text, sizeof text, "%.3f", v);
    return text;
}

void printSummary(const PrefetchHitTable& t)
{
    const std::size_t D = t.numDomains();
    std::printf(
        "hit rate = |first %d predicted & routed| / %d per token, mean over source layers; recall at budget %d\n",
        t.topK, t.topK, t.budget);
    std::printf("%-13s %3s %9s %9s %11s  held-out hit rate per domain\n", "predictor", "d", "held-out", "all",
        ("recall@" + std::to_string(t.budget)).c_str());
    for (std::size_t p = 0; p < t.predictors.size(); ++p)
        for (std::size_t a = 0; a < t.lookaheads.size(); ++a) {
            std::string domains;
            for (std::size_t d = 0; d < D; ++d)
                domains += (d ? "  " : "") + t.domains[d] + " " + rate(t.meanOverLayers(p, HitSplit::Heldout, d, a));
            std::printf("%-13s %3d %9s %9s %11s  %s\n", predictorName(t.predictors[p]).c_str(), t.lookaheads[a],
                rate(t.meanOverLayers(p, HitSplit::Heldout, D, a)).c_str(),
                rate(t.meanOverLayers(p, HitSplit::All, D, a)).c_str(),
                rate(t.meanOverLayers(p, HitSplit::Heldout, D, a, true)).c_str(), domains.c_str());
        }
}

int runPrefetch(const PrefetchArgs& a)
{
    PrefetchRequest request;
    request.atlas = a.atlas;
    request.predictors = a.predictors;
    request.lookaheads = a.lookaheads;
    request.budget = a.budget;
    request.csv = a.csv;
    request.store = !a.noStore;
    const PreparedPrefetch job = preparePrefetch(request);
    const int64_t heldout = [&] {
        int64_t n = 0;
        for (std::size_t s = 0; s < job.trace.trainSequences.size(); ++s)
            if (job.trace.trainSequences[s] == 0)
                n += job.trace.seqOffsets[s + 1] - job.trace.seqOffsets[s];
        return n;
    }();

    StopToken& stop = installStopHandler();
    ProgressBar bar("prefetch", "predictions");
    PrefetchHitTable table;
    try {
        table = runPrefetch(
            job, [&](const Progress& p) { return bar.update(p); }, &stop);
    } catch (const Cancelled&) {
        bar.finish("prefetch interrupted: nothing was written");
        return 130;
    }
    bar.finish("prefetch: " + std::to_string(job.predictors.size()) + " predictors x "
        + std::to_string(job.lookaheads.size()) + " lookaheads on " + std::to_string(job.trace.numTokens())
        + " tokens (" + std::to_string(heldout) + " held out, split "
        + (job.split.recorded ? std::string("from /prefetch/train_sequences")
                              : std::string("seeded, half the sequences of each domain"))
        + ")");
    printSummary(table);
    if (!job.csv.empty())
        std::printf("%s\n", job.csv.c_str());
    if (job.store)
        std::printf("%s:/%s\n", job.atlas.c_str(), kHitRateGroup);
    return 0;
}

} // namespace

Command addPrefetchCommand(CLI::App& app)
{
    auto a = std::make_shared<PrefetchArgs>();
    CLI::App* sub = app.add_subcommand(
        "prefetch", "Expert prefetch hit rates on the recorded routing, per predictor, layer, lookahead and domain");
    sub->add_option("atlas", a->atlas, "Atlas file (.atlas.h5); the table is stored in it as /prefetch_hit_rates")
        ->required();
    sub->add_option("--predictor", a->predictors,
           "Predictor: next-router, quasi-hidden, linear, mlp (recorded by capture --prefetch), frequency, previous, "
           "oracle; repeatable or comma-separated (default: every recorded one plus the three derived)")
        ->delimiter(',');
    sub->add_option("--lookahead", a->lookaheads,
           "Lookaheads in MoE layers, e.g. 1,2,3 (default: 1 to the recorded maximum, or 1 to 3)")
        ->delimiter(',');
    sub->add_option("--budget", a->budget, "Experts prefetched per token, k to E, for the recall (default: top-k)");
    sub->add_option("--csv", a->csv, "Write the table as CSV (one row per predictor, layer, lookahead, domain, split)");
    sub->add_flag("--no-store", a->noStore, "Do not store the table in the atlas");
    return [a] { return namingFlags(kPrefetchFlags, [&] { return runPrefetch(*a); }); };
}

} // namespace moeatlas::cli
