#include "jobs/core_jobs.h"

#include <QFileInfo>

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
    return [progress, name](const Progress& p) {
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

Job evalJob(EvalRequest request)
{
    Job job;
    job.name = QObject::tr("eval %1 (%2)").arg(fileName(request.atlas), QString::fromStdString(request.label));
    job.run = [request = std::move(request)](const ProgressFn& progress, const StopToken* stop) {
        const PreparedEval prepared = prepareEval(request);
        const EvalTable table = runEval(prepared, progress, stop);
        return JobResult { QObject::tr("evaluated %1 variants in %2 s")
                               .arg(static_cast<qsizetype>(table.variants.size()))
                               .arg(table.seconds, 0, 'f', 1),
            prepared.storeIn ? qstr(*prepared.storeIn) : QString() };
    };
    return job;
}

Job fisherJob(FisherRequest request)
{
    Job job;
    job.name = QObject::tr("fisher %1").arg(fileName(request.atlas));
    job.run = [request = std::move(request)](const ProgressFn& progress, const StopToken* stop) {
        const PreparedFisher prepared = prepareFisher(request);
        JobStages stages;
        stages.begin = [&progress](const std::string& stage, const std::string&) { return staged(progress, stage); };
        const FisherOutcome out = runFisher(prepared, stages, stop);
        return JobResult { QObject::tr("Fisher of %1 sequences in %2 s%3")
                               .arg(out.tables.samples.back())
                               .arg(out.tables.seconds, 0, 'f', 1)
                               .arg(out.ablation ? QObject::tr(", ablation of %1 variants")
                                                       .arg(static_cast<qsizetype>(out.ablation->variants.size()))
                                                 : QString()),
            qstr(prepared.atlas) };
    };
    return job;
}

Job prefetchJob(PrefetchRequest request)
{
    Job job;
    job.name = QObject::tr("prefetch %1").arg(fileName(request.atlas));
    job.run = [request = std::move(request)](const ProgressFn& progress, const StopToken* stop) {
        const PreparedPrefetch prepared = preparePrefetch(request);
        const PrefetchHitTable table = runPrefetch(prepared, progress, stop);
        return JobResult { QObject::tr("prefetch hit rates of %1 predictors x %2 lookaheads on %3 tokens")
                               .arg(static_cast<qsizetype>(table.predictors.size()))
                               .arg(static_cast<qsizetype>(table.lookaheads.size()))
                               .arg(table.tokens(HitSplit::All, table.numDomains())),
            prepared.store ? qstr(prepared.atlas) : QString() };
    };
    return job;
}

Job exportJob(
    std::filesystem::path source, Plan plan, std::filesystem::path out, ExportOptions options, std::string routing)
{
    Job job;
    job.name = QObject::tr("export %1").arg(fileName(out));
    job.run = [source = std::move(source), plan = std::move(plan), out = std::move(out), options = std::move(options),
                  routing = std::move(routing)](const ProgressFn& progress, const StopToken* stop) {
        ExportOptions o = options;
        o.routing = exportRouting(source, routing, options.atlasPath, progress, stop);
        // exportCheckpoint takes no stop token: the runner's progress returns false after a stop.
        o.progress = [&progress, stop](const Progress& p) { return progress(p) && !stop->stopRequested(); };
        const ExportResult r = exportCheckpoint(source, plan, out, o);
        return JobResult { r.dynamicRouting
                ? QObject::tr("exported %1 tensors (routing %2, a per-token k: load with trust_remote_code=True)")
                      .arg(r.tensors)
                      .arg(QString::fromStdString(o.routing.name()))
                : r.uniform
                ? QObject::tr("exported %1 tensors (uniform: loads in stock transformers)").arg(r.tensors)
                : QObject::tr("exported %1 tensors (non-uniform: load with trust_remote_code=True)").arg(r.tensors),
            qstr(r.dir) };
    };
    return job;
}

} // namespace moeatlas::views
