// The Prefetch tab (charts/prefetch_view.h) on atlases the moeatlas CLI builds as a user would (generate,
// capture, `moeatlas prefetch`): heatmap cells against the /prefetch_hit_rates arrays read here with
// AtlasFile, what-if TPOTs against runSimulation on a slice of the trace cut here by hand, the compute job
// (stored table, and Cancel leaving the atlas byte for byte as it was), the empty state, and the speculative
// quality read from a hand-written evaluation table.
#include "atlas_document.h"
#include "charts/prefetch_data.h"
#include "charts/prefetch_heatmap.h"
#include "charts/prefetch_view.h"
#include "charts/prefetch_whatif.h"
#include "eval/eval.h"
#include "jobs/job_runner.h"
#include "prefetch/prefetch_atlas.h"
#include "tst_charts_fixture.h"
#include "workflows/simulate_workflow.h"

#include <nlohmann/json.hpp>

#include <QBarSet>
#include <QChart>
#include <QComboBox>
#include <QCryptographicHash>
#include <QFile>
#include <QLabel>
#include <QPushButton>
#include <QSignalSpy>
#include <QSlider>
#include <QSpinBox>
#include <QStackedBarSeries>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTest>
#include <QThread>

#include <atomic>
#include <cmath>
#include <map>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

QByteArray fileHash(const QString& path)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly))
        return {};
    return QCryptographicHash::hash(f.readAll(), QCryptographicHash::Sha256);
}

// The first `perDomain` sequences of every domain, cut by hand: the trace and the prediction rows.
struct HandSlice {
    RoutingTrace trace;
    std::vector<std::pair<int64_t, int64_t>> ranges;
};

HandSlice cut(const RoutingTrace& full, int perDomain)
{
    HandSlice h;
    h.trace.numExperts = full.numExperts;
    h.trace.topK = full.topK;
    h.trace.moeLayers = full.moeLayers;
    h.trace.domainNames = full.domainNames;
    h.trace.routed.resize(full.routed.size());
    h.trace.seqOffsets = { 0 };
    std::map<int, int> seen;
    for (std::size_t s = 0; s + 1 < full.seqOffsets.size(); ++s) {
        const int64_t b = full.seqOffsets[s], e = full.seqOffsets[s + 1];
        if (b == e || seen[full.domainIds[static_cast<std::size_t>(b)]]++ >= perDomain)
            continue;
        h.ranges.emplace_back(b, e);
        h.trace.seqOffsets.push_back(h.trace.seqOffsets.back() + (e - b));
        h.trace.trainSequences.push_back(full.trainSequences[s]);
        for (int64_t t = b; t < e; ++t) {
            h.trace.domainIds.push_back(full.domainIds[static_cast<std::size_t>(t)]);
            for (std::size_t l = 0; l < full.routed.size(); ++l)
                for (int j = 0; j < full.topK; ++j)
                    h.trace.routed[l].push_back(full.routed[l][static_cast<std::size_t>(t * full.topK + j)]);
        }
    }
    return h;
}

// runSimulation on the hand-cut slice with the predictions of the whole run (as the tab does).
SimResult reference(const QString& atlasPath, const SimulateRequest& request, int perDomain)
{
    const PreparedSimulation job = prepareSimulation(request);
    const AtlasFile atlas = AtlasFile::openReadOnly(atlasPath.toStdString());
    const RoutingTrace full = readRoutingTrace(atlas);
    const HandSlice slice = cut(full, perDomain);
    std::vector<PredictionSet> sets;
    for (const int source : job.predictionSources()) {
        const PredictionSet whole = predictions(atlas, full, job.predictor, source, job.lookahead, job.budget);
        PredictionSet part { whole.predictor, whole.source, whole.lookahead, whole.budget, {} };
        for (const auto& [b, e] : slice.ranges)
            for (int64_t t = b; t < e; ++t)
                for (int j = 0; j < whole.budget; ++j)
                    part.ids.push_back(whole.ids[static_cast<std::size_t>(t * whole.budget + j)]);
        sets.push_back(std::move(part));
    }
    return *runSimulation(job, slice.trace, sets).detail;
}

} // namespace

class TstPrefetchView : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void emptyState();
    void heatmapCells_data();
    void heatmapCells();
    void cacheSliderReruns();
    void speculativeQuality();
    void computeJob();
    void cancelLeavesAtlas();

private:
    QString freshCopy(const QString& name);

    QTemporaryDir m_dir;
    test::AtlasFixture m_fixture;
    QString m_bare; // captured, no hit table
    QString m_atlas; // after moeatlas prefetch
    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    AtlasResults m_stored;
    std::vector<std::string> m_predictors, m_domains;
};

void TstPrefetchView::initTestCase()
{
    QVERIFY(m_dir.isValid());
    // 4 MoE layers (lookaheads 1..3), 8 experts, top-2, two domains of 6 sequences.
    QVERIFY(test::generateModel(m_dir.path(), m_fixture, 4, 6));
    m_bare = m_dir.filePath(QStringLiteral("bare.atlas.h5"));
    QCOMPARE(test::runMoeatlas(test::captureArgs(m_fixture, m_bare)).exitCode, 0);
    m_atlas = m_dir.filePath(QStringLiteral("run.atlas.h5"));
    QVERIFY(QFile::copy(m_bare, m_atlas));
    QCOMPARE(test::runMoeatlas({ QStringLiteral("prefetch"), m_atlas }).exitCode, 0);
    m_snapshot = loadAtlasSnapshot(m_atlas);
    QVERIFY(m_snapshot->prefetchHits);

    const std::optional<AtlasResults> stored
        = AtlasFile::openReadOnly(m_atlas.toStdString()).readResults("prefetch_hit_rates");
    QVERIFY(stored);
    m_stored = *stored;
    const nlohmann::json params = nlohmann::json::parse(m_stored.paramsJson);
    m_predictors = params.at("predictors").get<std::vector<std::string>>();
    m_domains = params.at("domains").get<std::vector<std::string>>(); // ..., "pooled"
    QCOMPARE(m_domains.back(), std::string("pooled"));
}

QString TstPrefetchView::freshCopy(const QString& name)
{
    const QString path = m_dir.filePath(name);
    QFile::remove(path);
    return QFile::copy(m_bare, path) ? path : QString();
}

void TstPrefetchView::emptyState()
{
    PrefetchView view;
    QVERIFY(view.noteText().contains(QStringLiteral("No atlas open")));
    view.setSnapshot(loadAtlasSnapshot(m_bare));
    QVERIFY(!view.hasTable());
    QVERIFY(view.heatmap()->isEmpty());
    QVERIFY2(view.noteText().contains(QStringLiteral("moeatlas prefetch bare.atlas.h5")), qPrintable(view.noteText()));
    QVERIFY(!view.computeButton()->isHidden());
    QVERIFY(!view.computeButton()->isEnabled()); // no runner to run it on
    JobRunner runner;
    view.setJobRunner(&runner);
    view.setSnapshot(loadAtlasSnapshot(m_bare));
    QVERIFY(view.computeButton()->isEnabled());
    QVERIFY(view.qualityNote().contains(QStringLiteral("moeatlas eval --atlas bare.atlas.h5 --speculative")));
    QVERIFY(!view.predictorBox()->isEnabled());
    view.whatIf()->runner()->cancel();
}

void TstPrefetchView::heatmapCells_data()
{
    QTest::addColumn<QString>("predictor");
    QTest::addColumn<QString>("domain");
    QTest::addColumn<int>("split");
    QTest::addColumn<bool>("recall");
    QTest::newRow("frequency math held-out") << QStringLiteral("frequency") << QStringLiteral("math") << 0 << false;
    QTest::newRow("previous pooled all") << QStringLiteral("previous") << QStringLiteral("pooled") << 1 << false;
    QTest::newRow("oracle code held-out recall") << QStringLiteral("oracle") << QStringLiteral("code") << 0 << true;
}

void TstPrefetchView::heatmapCells()
{
    QFETCH(QString, predictor);
    QFETCH(QString, domain);
    QFETCH(int, split);
    QFETCH(bool, recall);
    PrefetchView view;
    view.resize(1200, 700);
    view.setSnapshot(m_snapshot);
    view.whatIf()->runner()->cancel();
    QVERIFY(view.hasTable());
    view.predictorBox()->setCurrentText(predictor);
    view.domainBox()->setCurrentText(domain == QStringLiteral("pooled") ? QStringLiteral("pooled") : domain);
    view.splitBox()->setCurrentIndex(split);
    view.metricBox()->setCurrentIndex(recall ? 1 : 0);

    // The stored array [P, split, D + 1, S, A], indexed here.
    const AtlasArray* a = m_stored.find(recall ? "recall" : "hit_rate");
    QVERIFY(a && a->dims.size() == 5);
    const auto p = static_cast<std::size_t>(
        std::find(m_predictors.begin(), m_predictors.end(), predictor.toStdString()) - m_predictors.begin());
    const auto d = static_cast<std::size_t>(
        std::find(m_domains.begin(), m_domains.end(), domain.toStdString()) - m_domains.begin());
    QVERIFY(p < m_predictors.size() && d < m_domains.size());
    const std::size_t S = a->dims[3], A = a->dims[4];
    QCOMPARE(A, std::size_t(3));
    const PrefetchGrid& g = view.heatmap()->grid();
    QCOMPARE(static_cast<std::size_t>(g.rows), S);
    QCOMPARE(static_cast<std::size_t>(g.cols), A);
    int valid = 0;
    for (std::size_t s = 0; s < S; ++s)
        for (std::size_t c = 0; c < A; ++c) {
            const double want
                = a->values[(((p * a->dims[1] + static_cast<std::size_t>(split)) * a->dims[2] + d) * S + s) * A + c];
            const double got = g.at(static_cast<int>(s), static_cast<int>(c));
            if (std::isnan(want)) {
                QVERIFY(std::isnan(got));
                QVERIFY(s + c + 1 >= S); // no MoE layer s + d
                continue;
            }
            ++valid;
            QVERIFY2(std::fabs(got - want) <= 1e-12, qPrintable(QStringLiteral("%1 vs %2").arg(got).arg(want)));
            if (predictor == QStringLiteral("oracle"))
                QCOMPARE(got, 1.0);
            const QString tip = view.heatmap()->toolTipAt(view.heatmap()->cellCenter(int(s), int(c)));
            QVERIFY2(tip.contains(QString::number(want, 'f', 4)), qPrintable(tip));
        }
    QCOMPARE(valid, 3 + 2 + 1); // 4 MoE layers: 3 pairs at d=1, 2 at d=2, 1 at d=3
    // The tokens counted: token_counts [2, D] summed for pooled.
    const AtlasArray* counts = m_stored.find("token_counts");
    const std::size_t D = m_domains.size() - 1;
    double tokens = 0;
    for (std::size_t i = 0; i < D; ++i)
        if (d == D || i == d)
            tokens += counts->values[static_cast<std::size_t>(split) * D + i];
    QCOMPARE(static_cast<double>(g.tokens), tokens);
    const QString tip = view.heatmap()->toolTipAt(view.heatmap()->cellCenter(0, 0));
    QVERIFY2(tip.contains(QStringLiteral(": %1 tokens").arg(static_cast<qint64>(tokens))), qPrintable(tip));
}

void TstPrefetchView::cacheSliderReruns()
{
    PrefetchView view;
    PrefetchWhatIf* w = view.whatIf();
    w->setDebounceInterval(0);
    view.resize(1200, 700);
    view.show(); // the what-if runs while shown
    view.setSnapshot(m_snapshot);
    w->policyBox()->setCurrentText(QStringLiteral("prefetch"));
    w->predictorBox()->setCurrentText(QStringLiteral("frequency"));
    w->sequencesBox()->setValue(2);
    QTRY_VERIFY_WITH_TIMEOUT(w->shownOutcome() && !w->runner()->isBusy(), 60000);
    const quint64 before = w->runner()->generation();
    const int slots = w->cacheSlider()->value() == 3 ? 5 : 3;
    w->cacheSlider()->setValue(slots);
    QTRY_VERIFY_WITH_TIMEOUT(w->runner()->generation() > before && !w->runner()->isBusy(), 60000);
    const auto shown = w->shownOutcome();
    QVERIFY2(w->errorText().isEmpty(), qPrintable(w->errorText()));
    QCOMPARE(shown->settings.slots, slots);
    QCOMPARE(shown->job.config.cache.slots, slots);

    SimulateRequest request;
    request.atlas = m_atlas.toStdString();
    request.hardware = w->presetBox()->currentText().toStdString();
    request.linkBandwidth = w->bandwidthSlider()->value() * 0.5e9;
    request.policy = SimPolicy::Prefetch;
    request.cache.slots = slots;
    request.predictor = Predictor::Frequency;
    request.lookahead = 1;
    request.budget = 2;
    const SimResult want = reference(m_atlas, request, 2);
    QCOMPARE(shown->slice.tokens, want.tokens);
    QCOMPARE(shown->result.tpotMean, want.tpotMean);
    QCOMPARE(shown->result.stallPerToken, want.stallPerToken);
    request.policy = SimPolicy::OnDemand;
    const SimResult baseline = reference(m_atlas, request, 2);
    QCOMPARE(shown->baseline.tpotMean, baseline.tpotMean);
    // The shown text and the stacked bar carry the same numbers.
    const auto [scale, unit] = timeUnit(std::max(want.tpotMean, baseline.tpotMean));
    QVERIFY2(w->tpotText().startsWith(QStringLiteral("TPOT %1 %2").arg(want.tpotMean * scale, 0, 'f', 3).arg(unit)),
        qPrintable(w->tpotText()));
    auto* bars = qobject_cast<QStackedBarSeries*>(w->tpotChart()->series().value(0));
    QVERIFY(bars && bars->count() == 2);
    QCOMPARE(
        bars->barSets()[0]->at(1) + bars->barSets()[1]->at(1), (want.computePerToken + want.stallPerToken) * scale);
    QCOMPARE(w->stallChart()->series().size(), 1);
}

void TstPrefetchView::speculativeQuality()
{
    // A hand-written evaluation table: the full model and its speculative variant with frequency.
    EvalTable table;
    table.domains = { "math", "code" };
    table.predictedTokens = { 100, 300 };
    EvalVariant full;
    full.name = "full";
    full.method = "full";
    EvalVariant spec = full;
    spec.name = "full+spec:frequency";
    spec.base = "full";
    table.variants = { full, spec };
    table.nll = { { 2.0, 3.0 }, { 2.25, 3.5 } };
    auto snapshot = std::make_shared<AtlasSnapshot>(*m_snapshot);
    snapshot->evaluations["spec"] = evalTableResults(table);
    const std::vector<SpeculativeQuality> q = views::speculativeQuality(snapshot->evaluations);
    QCOMPARE(q.size(), std::size_t(1));
    QCOMPARE(q[0].predictor, Predictor::Frequency);
    QCOMPARE(q[0].deltaNll, (std::vector<double> { 0.25, 0.5 }));
    QCOMPARE(q[0].pooledDelta, 0.25 * 0.25 + 0.5 * 0.75);

    PrefetchView view;
    view.whatIf()->setDebounceInterval(0);
    view.show();
    view.setSnapshot(snapshot);
    view.whatIf()->sequencesBox()->setValue(1);
    QTableWidget* t = view.qualityTable();
    QCOMPARE(t->rowCount(), 1);
    QCOMPARE(t->item(0, 2)->text(), QStringLiteral("+0.2500"));
    QCOMPARE(t->item(0, 3)->text(), QStringLiteral("+0.5000"));
    QCOMPARE(t->item(0, 4)->text(), QStringLiteral("+0.4375"));
    QTRY_VERIFY_WITH_TIMEOUT(view.whatIf()->shownOutcome() && !view.whatIf()->runner()->isBusy(), 60000);
    const auto shown = view.whatIf()->shownOutcome();
    QCOMPARE(shown->speculative.size(), std::size_t(1));
    QVERIFY2(shown->speculative[0].result, qPrintable(shown->speculative[0].error));
    SimulateRequest request;
    request.atlas = m_atlas.toStdString();
    request.hardware = shown->settings.hardware;
    request.linkBandwidth = shown->settings.linkBandwidth;
    request.policy = SimPolicy::Speculative;
    request.eviction = shown->settings.eviction;
    request.cache.slots = shown->settings.slots;
    request.predictor = Predictor::Frequency;
    request.lookahead = 1;
    const SimResult want = reference(m_atlas, request, shown->settings.sequencesPerDomain);
    QCOMPARE(shown->speculative[0].result->tpotMean, want.tpotMean);
    const auto [scale, unit] = timeUnit(std::max(want.tpotMean, shown->baseline.tpotMean));
    QVERIFY2(t->item(0, 5)->text().startsWith(QString::number(want.tpotMean * scale, 'f', 3)),
        qPrintable(t->item(0, 5)->text()));
}

void TstPrefetchView::computeJob()
{
    const QString atlas = freshCopy(QStringLiteral("compute.atlas.h5"));
    QVERIFY(!atlas.isEmpty());
    JobRunner runner;
    PrefetchView view;
    view.setJobRunner(&runner);
    view.setSnapshot(loadAtlasSnapshot(atlas));
    view.whatIf()->runner()->cancel();
    QSignalSpy stored(&view, &PrefetchView::hitTableStored);
    QVERIFY(view.computeHitRates() > 0);
    QVERIFY(view.isComputing());
    QVERIFY(!view.cancelButton()->isHidden());
    QTRY_VERIFY_WITH_TIMEOUT(!view.isComputing(), 60000);
    QCOMPARE(stored.count(), 1);
    QCOMPARE(stored.at(0).at(0).toString(), atlas);
    // What the job stored is what the CLI stores on the same atlas.
    const std::optional<PrefetchHitTable> mine = readHitTable(AtlasFile::openReadOnly(atlas.toStdString()));
    QVERIFY(mine);
    QCOMPARE(mine->hitSums, m_snapshot->prefetchHits->hitSums);
    QCOMPARE(mine->recallSums, m_snapshot->prefetchHits->recallSums);
    view.setSnapshot(loadAtlasSnapshot(atlas));
    QVERIFY(view.hasTable());
    QVERIFY(view.computeButton()->isHidden());
    view.whatIf()->runner()->cancel();
}

void TstPrefetchView::cancelLeavesAtlas()
{
    // Cancel while it runs. On a tiny atlas the job may finish before the click reaches it (seen about once in
    // 25 runs on 2 loaded cores): then it must have stored a complete table. Each attempt checks whichever
    // outcome it got, on its own copy, and the test needs one real cancel among them.
    int cancelledRuns = 0;
    for (int attempt = 0; attempt < 20 && cancelledRuns == 0; ++attempt) {
        const QString copy = freshCopy(QStringLiteral("cancel-%1.atlas.h5").arg(attempt));
        QVERIFY(!copy.isEmpty());
        const QByteArray original = fileHash(copy);
        JobRunner runner;
        PrefetchView view;
        view.setJobRunner(&runner);
        view.setSnapshot(loadAtlasSnapshot(copy));
        view.whatIf()->runner()->cancel();
        QSignalSpy stored(&view, &PrefetchView::hitTableStored);
        QSignalSpy cancelled(&runner, &JobRunner::cancelled);
        QVERIFY(view.computeHitRates() > 0);
        view.cancelButton()->click();
        QTRY_VERIFY_WITH_TIMEOUT(!view.isComputing(), 60000);
        QCOMPARE(cancelled.count() + stored.count(), 1);
        if (cancelled.count() == 1) {
            ++cancelledRuns;
            QVERIFY(view.noteText().contains(QStringLiteral("Cancelled: the atlas is unchanged")));
            QCOMPARE(fileHash(copy), original);
            QVERIFY(!readHitTable(AtlasFile::openReadOnly(copy.toStdString())));
        } else {
            QVERIFY(readHitTable(AtlasFile::openReadOnly(copy.toStdString())));
        }
    }
    QCOMPARE(cancelledRuns, 1);

    const QString atlas = freshCopy(QStringLiteral("cancel.atlas.h5"));
    QVERIFY(!atlas.isEmpty());
    const QByteArray before = fileHash(atlas);
    JobRunner runner;
    PrefetchView view;
    view.setJobRunner(&runner);
    view.setSnapshot(loadAtlasSnapshot(atlas));
    view.whatIf()->runner()->cancel();
    QSignalSpy stored(&view, &PrefetchView::hitTableStored);

    // Cancel while it waits behind another job (dropped from the queue).
    std::atomic<bool> release { false };
    runner.start(Job { QStringLiteral("blocker"), [&release](const ProgressFn&, const StopToken*) {
                          while (!release)
                              QThread::msleep(5);
                          return JobResult {};
                      } });
    QVERIFY(view.computeHitRates() > 0);
    QVERIFY(runner.queuedJobs() == 1);
    view.cancelButton()->click();
    QCOMPARE(runner.queuedJobs(), 0);
    QVERIFY(!view.isComputing());
    release = true;
    QTRY_VERIFY_WITH_TIMEOUT(!runner.isBusy(), 60000);

    QCOMPARE(stored.count(), 0);
    QCOMPARE(fileHash(atlas), before);
    QVERIFY(!readHitTable(AtlasFile::openReadOnly(atlas.toStdString())));
}

QTEST_MAIN(TstPrefetchView)
#include "tst_prefetch_view.moc"
