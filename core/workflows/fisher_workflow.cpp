#include "workflows/fisher_workflow.h"

#include "util/atomic_file.h"
#include "util/error.h"

#include <cstdio>

namespace moeatlas {

namespace {

std::string seconds(double s)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f s", s);
    return buf;
}

} // namespace

PreparedFisher prepareFisher(const FisherRequest& request)
{
    const FisherOptions& o = request.options;
    if (!o.maskForm && !o.weightForm && !o.gradAbs)
        throw InputError("no Fisher form chosen: give at least one of mask, weight, grad_abs");
    if (o.chunkTokens < 0)
        throw RequestError(
            "options.chunkTokens", std::to_string(o.chunkTokens) + " tokens per chunk (expected a count >= 0)");
    if (!request.ablate && !request.ablationTokens.domains.empty())
        throw RequestError("ablationTokens", "ablation domains given, but the ablation is off (counts: none)");
    const AtlasFile atlas = AtlasFile::openReadOnly(request.atlas);
    if (!atlas.isComplete())
        throw InputError(request.atlas.string() + ": the atlas is not complete (resume the interrupted capture first)");
    ensureWritableDirectory(request.atlas);
    AtlasModel model = openAtlasModel(atlas, request.checkpoint);
    EvalTokens tokens = loadJobTokens(request.tokens, model, &atlas);
    if (request.ablate)
        checkAblationDomains(tokens.domains, tokens.source); // before the pass, not after it
    FisherPlan plan = planFisher(model.checkpoint, model.spec, tokens.seqOffsets, tokens.seqDomain, o);
    EvalTokens ablationTokens = tokens;
    if (!request.ablationTokens.domains.empty()) {
        try {
            ablationTokens = evalTokensFromCalibration(
                loadCalibration(request.ablationTokens, model.checkpoint.dir(), model.spec.vocabSize));
        } catch (const InputError& e) {
            throw RequestError("ablationTokens", e.what());
        }
    }
    FisherRunInfo info;
    info.tokenSource = tokens.source;
    info.checkpoint = model.checkpoint.dir().string();
    info.configSha256 = model.configSha256;
    std::optional<FisherAblationOptions> ablation;
    if (request.ablate) {
        ablation.emplace();
        ablation->counts = *request.ablate;
        ablation->form = ablationRankingForm(o);
        ablation->seed = request.seed;
    }
    return PreparedFisher { request.atlas, std::move(model), std::move(tokens), std::move(ablationTokens), o, plan,
        std::move(info), std::move(ablation) };
}

FisherOutcome runFisher(const PreparedFisher& job, const JobStages& stages, const StopToken* stop)
{
    FisherOutcome out;
    const AtlasModel& m = job.model;
    out.tables = computeFisherTables(
        m.checkpoint, m.spec, job.tokens, job.options, job.info, stages.beginStage("fisher", "steps"), stop);
    stages.endStage("fisher",
        std::to_string(out.tables.samples.back()) + " sequences, " + std::to_string(out.tables.tokens.back())
            + " tokens in " + seconds(out.tables.seconds) + " (" + fisherModeName(job.plan.mode) + ")");
    if (job.ablation) {
        ExecutorOptions executor;
        executor.threads = job.options.threads;
        out.ablation = runFisherAblation(m.checkpoint, m.spec, executor, job.ablationTokens, out.tables, *job.ablation,
            stages.beginStage("ablation", "token-layers"), stop);
        stages.endStage("ablation",
            std::to_string(out.ablation->variants.size()) + " variants in " + seconds(out.ablation->table.seconds));
    }
    // Nothing is written before every stage is done: a cancel leaves the atlas as it was.
    AtlasFile update = AtlasFile::openForUpdate(job.atlas, lockWaitFor(stages, stop));
    writeFisherTables(update, out.tables);
    if (out.ablation)
        writeFisherAblation(update, *out.ablation);
    update.commitUpdate();
    return out;
}

} // namespace moeatlas
