#include "jobs/core_jobs.h"

#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "fisher/fisher_store.h"
#include "util/error.h"
#include "util/sha256.h"

#include <QFileInfo>

#include <optional>

namespace moeatlas::views {

namespace {

QString fileName(const std::filesystem::path& path)
{
    return QFileInfo(QString::fromStdString(path.string())).fileName();
}

QString qstr(const std::filesystem::path& path)
{
    return QString::fromStdString(path.string());
}

// Progress of one stage of a multi-stage job, its name in front of the engine's stage text.
ProgressFn staged(const ProgressFn& progress, const std::string& name)
{
    return [&progress, name](const Progress& p) {
        return progress(Progress { p.stage.empty() ? name : name + ": " + p.stage, p.done, p.total });
    };
}

} // namespace

Job captureJob(CaptureParams params)
{
    Job job;
    job.name = QObject::tr("capture %1").arg(fileName(params.output));
    job.run = [params = std::move(params)](const ProgressFn& progress, const StopToken* stop) {
        const CaptureSummary s = runCapture(params, progress, stop);
        return JobResult { QObject::tr("captured %1 tokens, %2 layers in %3 s")
                               .arg(s.tokens)
                               .arg(s.layersRun)
                               .arg(s.seconds, 0, 'f', 1),
            qstr(s.atlas) };
    };
    return job;
}

Job scoreJob(std::filesystem::path atlas, ScoreParams params, ScoreRunOptions options)
{
    Job job;
    job.name = QObject::tr("score %1").arg(fileName(atlas));
    job.run = [atlas = std::move(atlas), params, options = std::move(options)](
                  const ProgressFn& progress, const StopToken* stop) {
        const ScoreRunReport r = scoreAtlasFile(atlas, params, options, progress, stop);
        QString message = r.upToDate
            ? QObject::tr("scores up to date")
            : QObject::tr("wrote %1 result groups").arg(static_cast<qsizetype>(r.written.size()));
        if (!r.skipped.empty())
            message
                += QObject::tr(" (%1 skipped: no expert output norms)").arg(static_cast<qsizetype>(r.skipped.size()));
        return JobResult { message, qstr(atlas) };
    };
    return job;
}

Job evalJob(EvalJobParams params)
{
    Job job;
    job.name = QObject::tr("eval %1 (%2)").arg(fileName(params.atlas), QString::fromStdString(params.label));
    job.run = [params = std::move(params)](const ProgressFn& progress, const StopToken* stop) {
        std::optional<AtlasFile> atlas = AtlasFile::openReadOnly(params.atlas);
        const std::filesystem::path checkpointDir
            = params.checkpoint.empty() ? std::filesystem::path(atlas->model().checkpointPath) : params.checkpoint;
        const Checkpoint ckpt(checkpointDir);
        const std::string configPath = (ckpt.dir() / "config.json").string();
        const std::string configSha = sha256File(ckpt.dir() / "config.json");
        if (configSha != atlas->model().configSha256)
            throw InputError(configPath + ": not the config.json " + params.atlas.string() + " was captured from");
        const ModelSpec spec = parseModelSpec(ckpt.config(), configPath);
        const EvalTokens tokens = evalTokensFromAtlas(*atlas);

        std::vector<EvalVariant> variants;
        if (params.full)
            variants.push_back(fullVariant(spec));
        for (const std::string& path : params.planFiles)
            variants.push_back(variantFromPlanFile(path, spec, configSha));
        if (!params.sweep.sparsities.empty())
            for (EvalVariant& v : sweepVariants(params.atlas, ckpt, spec, params.sweep))
                variants.push_back(std::move(v));
        if (variants.empty())
            throw InputError("nothing to evaluate: no full model, plan or sparsity");

        const EvalTable table
            = evaluateVariants(ckpt, spec, params.executor, tokens, std::move(variants), progress, stop);
        if (params.save) {
            const std::filesystem::path path = atlas->path();
            atlas.reset();
            storeEvalTable(path, params.label, table);
        }
        return JobResult { QObject::tr("evaluated %1 variants in %2 s")
                               .arg(static_cast<qsizetype>(table.variants.size()))
                               .arg(table.seconds, 0, 'f', 1),
            params.save ? qstr(params.atlas) : QString() };
    };
    return job;
}

Job fisherJob(FisherJobParams params)
{
    Job job;
    job.name = QObject::tr("fisher %1").arg(fileName(params.atlas));
    job.run = [params = std::move(params)](const ProgressFn& progress, const StopToken* stop) {
        const FisherOptions& o = params.options;
        if (!o.maskForm && !o.weightForm && !o.gradAbs)
            throw InputError("fisher: choose at least one of the mask, weight and grad_abs forms");
        std::optional<AtlasFile> atlas = AtlasFile::openReadOnly(params.atlas);
        if (!atlas->isComplete())
            throw InputError(params.atlas.string() + ": the atlas is not complete (finish the capture with --resume)");
        const std::filesystem::path checkpointDir
            = params.checkpoint.empty() ? std::filesystem::path(atlas->model().checkpointPath) : params.checkpoint;
        const Checkpoint ckpt(checkpointDir);
        const std::string configPath = (ckpt.dir() / "config.json").string();
        const std::string configSha = sha256File(ckpt.dir() / "config.json");
        if (configSha != atlas->model().configSha256)
            throw InputError(configPath + ": not the config.json " + params.atlas.string() + " was captured from");
        const ModelSpec spec = parseModelSpec(ckpt.config(), configPath);
        const EvalTokens tokens = evalTokensFromAtlas(*atlas);

        if (params.ablate)
            checkAblationDomains(tokens.domains, tokens.source); // before the pass, not after it
        FisherRunInfo info;
        info.tokenSource = tokens.source;
        info.checkpoint = ckpt.dir().string();
        info.configSha256 = configSha;
        const FisherTables tables = computeFisherTables(ckpt, spec, tokens, o, info, staged(progress, "fisher"), stop);
        std::optional<FisherAblation> ablation;
        if (params.ablate) {
            FisherAblationOptions a;
            a.counts = *params.ablate;
            a.form = o.maskForm ? "mask" : o.weightForm ? "weight" : "grad_abs";
            a.seed = params.seed;
            ExecutorOptions executor;
            executor.threads = o.threads;
            ablation = runFisherAblation(ckpt, spec, executor, tokens, tables, a, staged(progress, "ablation"), stop);
        }
        // Nothing is written before both stages are done: a cancel leaves the atlas as it was.
        const std::filesystem::path path = atlas->path();
        atlas.reset();
        AtlasFile update = AtlasFile::openForUpdate(path);
        writeFisherTables(update, tables);
        if (ablation)
            writeFisherAblation(update, *ablation);
        update.commitUpdate();
        return JobResult { QObject::tr("Fisher of %1 sequences in %2 s%3")
                               .arg(tables.samples.back())
                               .arg(tables.seconds, 0, 'f', 1)
                               .arg(ablation ? QObject::tr(", ablation of %1 variants")
                                                   .arg(static_cast<qsizetype>(ablation->variants.size()))
                                             : QString()),
            qstr(path) };
    };
    return job;
}

Job exportJob(std::filesystem::path source, Plan plan, std::filesystem::path out, ExportOptions options)
{
    Job job;
    job.name = QObject::tr("export %1").arg(fileName(out));
    job.run = [source = std::move(source), plan = std::move(plan), out = std::move(out), options = std::move(options)](
                  const ProgressFn& progress, const StopToken* stop) {
        ExportOptions o = options;
        // exportCheckpoint takes no stop token: the runner's progress returns false after a stop.
        o.progress = [&progress, stop](const Progress& p) { return progress(p) && !stop->stopRequested(); };
        const ExportResult r = exportCheckpoint(source, plan, out, o);
        return JobResult { r.uniform
                ? QObject::tr("exported %1 tensors (uniform: loads in stock transformers)").arg(r.tensors)
                : QObject::tr("exported %1 tensors (non-uniform: load with trust_remote_code=True)").arg(r.tensors),
            qstr(r.dir) };
    };
    return job;
}

} // namespace moeatlas::views
