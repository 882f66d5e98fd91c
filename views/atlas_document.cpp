#include "atlas_document.h"

#include "checkpoint/checkpoint.h"
#include "fisher_data.h"
#include "metrics/probmoe_reader.h"
#include "metrics/routing_stats_reader.h"
#include "plan/plan_costs.h"
#include "prefetch/prefetch_atlas.h"
#include "util/error.h"
#include "workflows/atlas_model.h"

#include <nlohmann/json.hpp>

#include <QFutureWatcher>
#include <QtConcurrent/QtConcurrentRun>

#include <algorithm>
#include <filesystem>

namespace moeatlas::views {

namespace {

const AtlasArray* findArray(const AtlasResults* results, const std::string& name)
{
    return results ? results->find(name) : nullptr;
}

// Top-k and router groups from the config the atlas recorded, so plans compile without the
// checkpoint; costs and the model type come from the checkpoint when it is still there.
void fillPlanContext(const AtlasFile& atlas, AtlasSnapshot& s)
{
    s.planContext = PlanContext {};
    s.planContext.topK = std::max(1, s.model.topK);
    s.planContext.modelType = s.model.modelType;
    s.planContext.numLayers = s.model.numLayers;
    s.planContext.checkpoint = s.model.checkpointPath;
    const nlohmann::json config = nlohmann::json::parse(s.model.configJson, nullptr, false);
    if (config.is_object() && config.contains("n_group") && config["n_group"].is_number_integer())
        s.planContext.numGroups = std::max(1, config["n_group"].get<int>());

    const std::filesystem::path dir(s.model.checkpointPath);
    std::error_code ec;
    if (s.model.checkpointPath.empty() || !std::filesystem::is_regular_file(dir / "config.json", ec)) {
        s.costsNote = QStringLiteral("checkpoint %1 not found: predicted savings unavailable")
                          .arg(QString::fromStdString(s.model.checkpointPath));
        return;
    }
    try {
        // The checkpoint the atlas was captured from, its config.json checked (workflows/atlas_model.h).
        const AtlasModel model = openAtlasModel(atlas, {});
        s.planContext = planContextFor(model.checkpoint);
        s.hasCosts = true;
    } catch (const std::exception& e) {
        s.costsNote = QStringLiteral("predicted savings unavailable: %1").arg(QString::fromUtf8(e.what()));
    }
}

// /fisher: the small tables now, the unit scores on demand (FisherUnitStore).
void readFisher(const AtlasFile& atlas, AtlasSnapshot& s)
{
    try {
        std::optional<FisherSummary> summary = readFisherSummary(atlas);
        if (!summary) {
            s.fisherNote = QStringLiteral("No Fisher tables in this atlas: run moeatlas fisher on it "
                                          "(or Jobs > Compute Fisher…).");
            return;
        }
        auto fisher = std::make_shared<const FisherSummary>(std::move(*summary));
        // Expert-level Fisher as plan criteria, through the reader `moeatlas plan` uses.
        if (s.complete)
            for (const FisherSummaryForm& f : fisher->forms)
                if (isExpertPlanForm(f.form))
                    s.scores.emplace(fisherCriterionName(f.form), readAtlasScores(atlas, fisherCriterionName(f.form)));
        s.fisher = std::move(fisher);
        s.fisherUnits = std::make_shared<FisherUnitStore>(atlas.path());
    } catch (const std::exception& e) {
        s.fisher.reset();
        s.fisherNote = QString::fromUtf8(e.what());
        s.fisherMalformed = true;
        return;
    }
    try {
        if (std::optional<FisherAblationResults> ablation = readFisherAblation(atlas))
            s.fisherAblation = std::make_shared<const FisherAblationResults>(std::move(*ablation));
    } catch (const std::exception& e) {
        s.fisherNote = QString::fromUtf8(e.what());
        s.fisherMalformed = true;
    }
}

} // namespace

QStringList AtlasSnapshot::domainNames() const
{
    QStringList names;
    for (const AtlasDomain& d : domains)
        names << QString::fromStdString(d.name);
    return names;
}

QStringList AtlasSnapshot::criteria() const
{
    QStringList names;
    for (const auto& [name, group] : scoreGroups)
        names << QString::fromStdString(name);
    return names;
}

const AtlasArray* AtlasSnapshot::scoreArray(const std::string& criterion, const std::string& name) const
{
    const auto it = scoreGroups.find(criterion);
    return it == scoreGroups.end() ? nullptr : findArray(&it->second, name);
}

std::string AtlasSnapshot::scoreSource(const std::string& criterion) const
{
    if (const auto it = scores.find(criterion); it != scores.end() && !it->second.source.empty())
        return it->second.source;
    if (fisher && !scoreGroups.count(criterion) && criterion.rfind("fisher_", 0) == 0)
        return "/fisher/" + criterion.substr(7) + "/experts";
    return "/scores/" + criterion;
}

const AtlasArray* AtlasSnapshot::statisticsArray(const std::string& name) const
{
    return statistics ? findArray(&*statistics, name) : nullptr;
}

std::shared_ptr<const AtlasSnapshot> loadAtlasSnapshot(const QString& path)
{
    auto s = std::make_shared<AtlasSnapshot>();
    s->path = path;
    const std::filesystem::path file(path.toStdString());
    std::error_code ec;
    if (!std::filesystem::exists(file, ec))
        throw InputError(file.string() + ": no such file");
    const AtlasFile atlas = AtlasFile::openReadOnly(file);
    s->complete = atlas.isComplete();
    s->model = atlas.model();
    s->domains = atlas.calibration().domains;
    for (const std::string& criterion : atlas.resultGroups("scores")) {
        if (std::optional<AtlasResults> group = atlas.readResults("scores/" + criterion))
            s->scoreGroups.emplace(criterion, std::move(*group));
    }
    s->statistics = atlas.readResults("statistics");
    try {
        if (!s->statistics)
            throw InputError(file.string() + ": no routing statistics (Jobs > Score atlas, or moeatlas score)");
        s->routingStats = std::make_shared<const RoutingStats>(routingStatsFromResults(atlas, *s->statistics));
    } catch (const std::exception& e) {
        s->routingStatsNote = QString::fromUtf8(e.what());
    }
    try {
        s->probmoe = std::make_shared<const ProbMoeTables>(probmoeTablesFromAtlas(atlas));
    } catch (const std::exception& e) {
        s->probmoeNote = QString::fromUtf8(e.what());
    }
    for (const std::string& label : atlas.resultGroups("evaluation")) {
        if (std::optional<AtlasResults> table = atlas.readResults("evaluation/" + label))
            s->evaluations.emplace(label, std::move(*table));
    }
    try {
        if (std::optional<PrefetchHitTable> hits = readHitTable(atlas))
            s->prefetchHits = std::make_shared<const PrefetchHitTable>(std::move(*hits));
        else
            s->prefetchNote = QStringLiteral("No prefetch hit rates in this atlas: run moeatlas prefetch ATLAS (or "
                                             "Compute hit rates on the Prefetch tab).");
    } catch (const std::exception& e) {
        s->prefetchNote = QString::fromUtf8(e.what());
        s->prefetchMalformed = true;
    }
    if (std::optional<AtlasPrefetchInfo> info = atlas.prefetchInfo())
        s->prefetchInfo = std::make_shared<const AtlasPrefetchInfo>(std::move(*info));
    // Plan-ready tables through the same reader as `moeatlas plan` (shape checks included), from
    // the groups read above: one file version for the whole snapshot.
    if (s->complete) {
        for (const auto& [criterion, group] : s->scoreGroups)
            s->scores.emplace(criterion, atlasScoresFromResults(atlas, criterion, group));
    }
    readFisher(atlas, *s);
    fillPlanContext(atlas, *s);
    return s;
}

AtlasDocument::AtlasDocument(QObject* parent)
    : QObject(parent)
{
}

AtlasDocument::~AtlasDocument() = default;

QString AtlasDocument::path() const
{
    return m_snapshot ? m_snapshot->path : QString();
}

void AtlasDocument::open(const QString& path)
{
    const quint64 job = ++m_job;
    m_loading = true;
    Q_EMIT loadingStarted(path);
    auto* watcher = new QFutureWatcher<std::pair<std::shared_ptr<const AtlasSnapshot>, QString>>(this);
    connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, job] {
        auto [snapshot, error] = watcher->result();
        watcher->deleteLater();
        finishLoad(job, std::move(snapshot), error);
    });
    watcher->setFuture(QtConcurrent::run([path]() -> std::pair<std::shared_ptr<const AtlasSnapshot>, QString> {
        try {
            return { loadAtlasSnapshot(path), QString() };
        } catch (const std::exception& e) {
            return { nullptr, QStringLiteral("Cannot open %1: %2").arg(path, QString::fromUtf8(e.what())) };
        }
    }));
}

bool AtlasDocument::openBlocking(const QString& path)
{
    const quint64 job = ++m_job;
    m_loading = true;
    Q_EMIT loadingStarted(path);
    try {
        finishLoad(job, loadAtlasSnapshot(path), QString());
        return true;
    } catch (const std::exception& e) {
        finishLoad(job, nullptr, QStringLiteral("Cannot open %1: %2").arg(path, QString::fromUtf8(e.what())));
        return false;
    }
}

void AtlasDocument::finishLoad(quint64 job, std::shared_ptr<const AtlasSnapshot> snapshot, const QString& error)
{
    if (job != m_job)
        return; // superseded by a later open()
    m_loading = false;
    if (!snapshot) {
        Q_EMIT failed(error);
        return;
    }
    m_snapshot = std::move(snapshot);
    Q_EMIT changed();
    Q_EMIT loaded(m_snapshot->path);
}

void AtlasDocument::setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot)
{
    ++m_job;
    m_loading = false;
    m_snapshot = std::move(snapshot);
    Q_EMIT changed();
}

void AtlasDocument::close()
{
    setSnapshot(nullptr);
}

} // namespace moeatlas::views
