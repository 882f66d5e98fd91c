// The open atlas on the GUI side: one immutable snapshot (model, domains, scores per criterion,
// statistics, evaluation tables, plan costs) read off the GUI thread and handed to the views.
#pragma once

#include "atlas/atlas_file.h"
#include "plan/atlas_scores.h"
#include "plan/plan.h"

#include <QObject>
#include <QString>
#include <QStringList>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {
struct FisherAblationResults;
struct FisherSummary;
struct PrefetchHitTable;
struct ProbMoeTables;
struct RoutingStats;
} // namespace moeatlas

namespace moeatlas::views {

class FisherUnitStore;

// Everything the views show of one atlas, read once. Plain value type: tests and benchmarks may
// fill one in memory (no file behind it).
struct AtlasSnapshot {
    QString path; // the atlas file as opened
    bool complete = false;
    AtlasModelInfo model;
    std::vector<AtlasDomain> domains; // calibration domains, in row order of the score arrays
    // /scores/<criterion>: the raw groups and the plan-ready tables (readAtlasScores). `scores`
    // also holds the expert-level Fisher of the gradient forms (fisher_mask, fisher_weight,
    // fisher_grad_abs: /fisher/<form>/experts), which are not in scoreGroups.
    std::map<std::string, AtlasResults> scoreGroups;
    std::map<std::string, AtlasScores> scores;
    std::optional<AtlasResults> statistics; // /statistics
    // The same statistics sliced for the routing charts (metrics/routing_stats_reader.h); null with
    // the reason in routingStatsNote when the atlas was not scored.
    std::shared_ptr<const RoutingStats> routingStats;
    QString routingStatsNote;
    // /probmoe (ProbMoE exact-k tables, metrics/probmoe_reader.h); null with the reason in probmoeNote.
    std::shared_ptr<const ProbMoeTables> probmoe;
    QString probmoeNote;
    std::map<std::string, AtlasResults> evaluations; // /evaluation/<label>
    // /prefetch_hit_rates (moeatlas prefetch): null with the reason in prefetchNote when absent or malformed.
    std::shared_ptr<const PrefetchHitTable> prefetchHits;
    QString prefetchNote;
    bool prefetchMalformed = false;
    // /prefetch's attributes (capture --prefetch: recorded predictors, lookahead, budget, split); null without.
    std::shared_ptr<const AtlasPrefetchInfo> prefetchInfo;
    // /fisher (moeatlas fisher): counts, expert-level sums and concentration of every form, the
    // ablation, and a store that reads a form's unit scores on demand (they can be large). Null
    // with the reason in fisherNote when the atlas has none or they are malformed.
    std::shared_ptr<const FisherSummary> fisher;
    std::shared_ptr<const FisherAblationResults> fisherAblation;
    std::shared_ptr<FisherUnitStore> fisherUnits;
    QString fisherNote;
    bool fisherMalformed = false; // /fisher (or its ablation) exists but could not be read: fisherNote says why
    // Planning context: top-k and groups always; costs only when the checkpoint the atlas was
    // captured from is present and its config.json still hashes to the atlas's config_sha256.
    PlanContext planContext;
    bool hasCosts = false;
    QString costsNote; // why costs are missing (empty when present)

    int numLayers() const { return static_cast<int>(model.moeLayers.size()); }
    int numExperts() const { return model.numExperts; }
    QStringList domainNames() const;
    QStringList criteria() const; // scored criteria, sorted
    // Where a plan criterion's scores come from: "/scores/<criterion>" or "/fisher/<form>/experts".
    std::string scoreSource(const std::string& criterion) const;
    // An array of a score group ("value") or of the statistics ("load_share"); nullptr if absent.
    const AtlasArray* scoreArray(const std::string& criterion, const std::string& name = "value") const;
    const AtlasArray* statisticsArray(const std::string& name) const;
};

// Reads a snapshot from an atlas file (blocking; HDF5 calls take the process-wide lock). Throws
// moeatlas::Error with a message naming the file.
std::shared_ptr<const AtlasSnapshot> loadAtlasSnapshot(const QString& path);

// The document: owns the current snapshot; open() loads in a worker thread and publishes the
// result on the GUI thread. A later open() supersedes an earlier one still loading.
class AtlasDocument : public QObject {
    Q_OBJECT
public:
    explicit AtlasDocument(QObject* parent = nullptr);
    ~AtlasDocument() override;

    // Starts loading `path` in the background; loaded() or failed() follows.
    void open(const QString& path);
    // Loads on the calling thread (tests, command line); returns false and emits failed() on error.
    bool openBlocking(const QString& path);
    // Installs a snapshot made elsewhere (in-memory data for benchmarks and tests).
    void setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot);
    void close();

    bool isLoading() const { return m_loading; }
    bool isOpen() const { return m_snapshot != nullptr; }
    QString path() const;
    // Never null after loaded(); null while nothing is open.
    std::shared_ptr<const AtlasSnapshot> snapshot() const { return m_snapshot; }

Q_SIGNALS:
    void loadingStarted(const QString& path);
    void loaded(const QString& path);
    void failed(const QString& message);
    void changed(); // the snapshot was replaced or cleared

private:
    void finishLoad(quint64 job, std::shared_ptr<const AtlasSnapshot> snapshot, const QString& error);

    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    quint64 m_job = 0;
    bool m_loading = false;
};

} // namespace moeatlas::views
