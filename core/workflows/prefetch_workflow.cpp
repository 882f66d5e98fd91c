#include "workflows/prefetch_workflow.h"

#include "prefetch/prefetch_derived.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/file_lock.h"

#include <algorithm>

namespace moeatlas {

namespace {

std::string joinInts(const std::vector<int>& values)
{
    std::string text;
    for (const int v : values)
        text += (text.empty() ? "" : ", ") + std::to_string(v);
    return text;
}

// A RequestError of the core (field "predictor", "lookahead", "budget") as the request's field.
template <class F> void asRequestField(F&& f)
{
    try {
        f();
    } catch (const RequestError& e) {
        const std::string& field = e.field();
        if (field == "predictor")
            throw RequestError("predictors", e.what());
        if (field == "lookahead")
            throw RequestError("lookaheads", e.what());
        throw;
    }
}

} // namespace

PreparedPrefetch preparePrefetch(const PrefetchRequest& request)
{
    // Names first: a typo is reported before the atlas is read.
    std::vector<Predictor> asked;
    for (const std::string& name : request.predictors) {
        const Predictor p = parsePredictor(name, "predictors");
        if (std::find(asked.begin(), asked.end(), p) == asked.end())
            asked.push_back(p);
    }
    if (!request.csv.empty()) {
        const std::filesystem::path dir = std::filesystem::absolute(request.csv).parent_path();
        if (!std::filesystem::is_directory(dir))
            throw RequestError("csv", request.csv.string() + ": directory " + dir.string() + " does not exist");
    }
    const AtlasFile atlas = AtlasFile::openReadOnly(request.atlas);
    if (request.store) {
        if (!atlas.isComplete())
            throw RequestError("store",
                request.atlas.string()
                    + ": the atlas is not complete, the table cannot be stored in it "
                      "(resume the capture first)");
        ensureWritableDirectory(request.atlas);
    }
    const std::optional<AtlasPrefetchInfo> info = atlas.prefetchInfo();
    const AtlasModelInfo& model = atlas.model();
    const int numLayers = static_cast<int>(model.moeLayers.size());

    PreparedPrefetch job;
    job.atlas = request.atlas;
    job.csv = request.csv;
    job.store = request.store;
    job.predictors = asked;
    if (job.predictors.empty()) {
        if (info)
            for (const Predictor p : kAllPredictors)
                if (isRecorded(p)
                    && std::find(info->predictors.begin(), info->predictors.end(), predictorName(p))
                        != info->predictors.end())
                    job.predictors.push_back(p);
        job.predictors.insert(job.predictors.end(), { Predictor::Frequency, Predictor::Previous, Predictor::Oracle });
    }
    for (const Predictor p : job.predictors)
        if (isRecorded(p)
            && (!info
                || std::find(info->predictors.begin(), info->predictors.end(), predictorName(p))
                    == info->predictors.end()))
            throw RequestError("predictors",
                request.atlas.string() + ": no recorded '" + predictorName(p) + "' predictions"
                    + (info ? std::string(" in /prefetch") : std::string(" (the atlas has no /prefetch)"))
                    + "; capture with --prefetch to record them, or ask for frequency, previous or oracle");
    if (numLayers < 2)
        throw RequestError("lookaheads",
            request.atlas.string() + ": the model has " + std::to_string(numLayers)
                + " MoE layer(s): there is no later MoE layer to predict");

    job.lookaheads = request.lookaheads;
    if (job.lookaheads.empty()) {
        const int last = std::min(info ? info->maxLookahead : 3, numLayers - 1);
        for (int d = 1; d <= last; ++d)
            job.lookaheads.push_back(d);
    }
    const bool anyRecorded = std::any_of(job.predictors.begin(), job.predictors.end(), isRecorded);
    for (const int d : job.lookaheads) {
        if (d < 1 || d >= numLayers)
            throw RequestError("lookaheads",
                "lookahead " + std::to_string(d) + " is "
                    + (d < 1 ? "not a positive count of MoE layers" : "beyond the last MoE layer")
                    + ": the model's MoE layers are " + joinInts(model.moeLayers) + ", so a lookahead is 1 to "
                    + std::to_string(numLayers - 1) + " MoE layers");
        if (anyRecorded && d > info->maxLookahead)
            throw RequestError("lookaheads",
                "lookahead " + std::to_string(d) + ": " + request.atlas.string()
                    + " recorded predictions up to lookahead " + std::to_string(info->maxLookahead)
                    + " (capture again with a larger lookahead, or ask for derived predictors only)");
    }
    std::sort(job.lookaheads.begin(), job.lookaheads.end());
    job.lookaheads.erase(std::unique(job.lookaheads.begin(), job.lookaheads.end()), job.lookaheads.end());

    job.budget = request.budget == 0 ? model.topK : request.budget;
    if (job.budget < model.topK || job.budget > model.numExperts)
        throw RequestError("budget",
            "budget " + std::to_string(job.budget) + " experts is outside [" + std::to_string(model.topK) + ", "
                + std::to_string(model.numExperts) + "] (top-k to the expert count)");
    if (anyRecorded && job.budget > info->budget)
        throw RequestError("budget",
            "budget " + std::to_string(job.budget) + ": " + request.atlas.string() + " recorded "
                + std::to_string(info->budget) + " experts per prediction");

    job.trace = readRoutingTrace(atlas, &job.split);
    // The first valid pair of every predictor goes through the core's own checks once more.
    asRequestField([&] { checkPrediction(job.trace, 0, job.lookaheads.front(), job.budget); });
    return job;
}

PrefetchHitTable runPrefetch(const PreparedPrefetch& job, const ProgressFn& progress, const StopToken* stop)
{
    const AtlasFile atlas = AtlasFile::openReadOnly(job.atlas);
    PrefetchHitTable table = computeHitTable(
        job.trace, job.predictors, job.lookaheads, job.budget,
        [&](Predictor p, int source, int lookahead, int budget) {
            return predictions(atlas, job.trace, p, source, lookahead, budget);
        },
        progress, stop);
    if (stop && stop->stopRequested())
        throw Cancelled();
    if (!job.csv.empty())
        writeFileAtomically(job.csv, hitTableCsv(table));
    if (job.store)
        storeHitTable(job.atlas, table, job.split, reportingLockWait(progress, stop));
    return table;
}

} // namespace moeatlas
