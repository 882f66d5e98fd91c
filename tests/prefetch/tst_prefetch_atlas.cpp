// The read side of /prefetch (AtlasFile::prefetchInfo, readPrefetchIds, readDefaultVectors,
// readLearnedEstimator) and the atlas adaptor (readRoutingTrace, predictions) on atlases whose /prefetch
// group h5py wrote (tests/prefetch/write_prefetch.py, an independent writer following
// docs/atlas-format.md): int16 and int32 ids, missing datasets named, an atlas without /prefetch.
#include "../atlas/atlas_test_data.h"
#include "prefetch/prefetch_atlas.h"
#include "prefetch/prefetch_derived.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <fstream>

using namespace moeatlas;
using namespace moeatlas::test;

namespace {

template <class F> std::string requestFieldOf(F f)
{
    try {
        f();
    } catch (const RequestError& e) {
        return e.field() + ": " + e.what();
    }
    return {};
}

} // namespace

class TstPrefetchAtlas : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void withoutPrefetch();
    void readsWhatH5pyWrote_data();
    void readsWhatH5pyWrote();
    void missingDatasetIsNamed_data();
    void missingDatasetIsNamed();
    void recordedLimits();

private:
    // A copy of the base atlas with /prefetch written by h5py with `args`; its JSON in *written.
    QString withPrefetch(const QString& name, const QStringList& args, nlohmann::json* written = nullptr);

    QTemporaryDir m_dir;
    QString m_base;
};

void TstPrefetchAtlas::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
    // 3 MoE layers (decoder 0, 1, 3), 8 experts, top-2, 5 sequences of 8 tokens in two domains.
    AtlasTestData d = makeTestData(8, 5, 8, 2);
    d.model.moeLayers = { 0, 1, 3 };
    m_base = m_dir.filePath(QStringLiteral("base.atlas.h5"));
    AtlasFile atlas = AtlasFile::create(
        m_base.toStdString(), d.model, d.calibration, d.tokens, d.domainIds, d.seqOffsets, AtlasCreateOptions {});
    for (const int layer : d.model.moeLayers) {
        writeTestLayer(atlas, layer, 16);
        atlas.markLayerComplete(layer);
    }
    atlas.finalize();
}

QString TstPrefetchAtlas::withPrefetch(const QString& name, const QStringList& args, nlohmann::json* written)
{
    const QString copy = m_dir.filePath(name);
    QFile::remove(copy);
    if (!QFile::copy(m_base, copy))
        return {};
    QFile::setPermissions(copy, QFile::ReadOwner | QFile::WriteOwner);
    const QString json = copy + QStringLiteral(".json");
    const ProcessResult r = runPython(QStringLiteral("tests/prefetch/write_prefetch.py"),
        QStringList { copy, QStringLiteral("--json"), json } + args);
    if (r.exitCode != 0) {
        qWarning("%s", qPrintable(r.stdErr));
        return {};
    }
    if (written) {
        std::ifstream in(json.toStdString());
        *written = nlohmann::json::parse(in);
    }
    return copy;
}

void TstPrefetchAtlas::withoutPrefetch()
{
    const AtlasFile atlas = AtlasFile::openReadOnly(m_base.toStdString());
    QVERIFY(!atlas.prefetchInfo().has_value());
    QVERIFY(atlas.readDefaultVectors(1).first.empty());
    QVERIFY(atlas.readDefaultVectors(1).second.empty());
    QVERIFY(!atlas.readLearnedEstimator("linear", 0, 1).has_value());
    QVERIFY_THROWS_EXCEPTION(InputError, atlas.readPrefetchIds("next-router", 0, 1));
    // The split: splitSequences(offsets, domains, 0.5, the calibration seed).
    TraceSplit split;
    const RoutingTrace trace = readRoutingTrace(atlas, &split);
    QVERIFY(!split.recorded);
    QCOMPARE(split.seed, atlas.calibration().seed);
    QCOMPARE(trace.trainSequences,
        splitSequences(atlas.seqOffsets(), atlas.domainIds(), kDefaultTrainFraction, atlas.calibration().seed));
    QCOMPARE(trace.routed.size(), std::size_t { 3 });
    QCOMPARE(trace.routed[2], atlas.readTopkIds(3));
    const std::string e = requestFieldOf([&] { predictions(atlas, trace, Predictor::NextRouter, 0, 1, 2); });
    QVERIFY2(e.rfind("predictor: ", 0) == 0 && e.find(m_base.toStdString()) != std::string::npos
            && e.find("next-router") != std::string::npos && e.find("--prefetch") != std::string::npos,
        e.c_str());
    // Derived predictors need no /prefetch.
    QCOMPARE(predictions(atlas, trace, Predictor::Oracle, 0, 2, 2).ids.size(), std::size_t { 80 });
}

void TstPrefetchAtlas::readsWhatH5pyWrote_data()
{
    QTest::addColumn<QStringList>("args");
    QTest::addColumn<QString>("dtype");
    QTest::newRow("int16 ids") << QStringList {} << "int16";
    QTest::newRow("int32 ids, budget 8") << QStringList { QStringLiteral("--int32"), QStringLiteral("--budget"),
        QStringLiteral("8"), QStringLiteral("--predictors"), QStringLiteral("next-router,mlp") }
                                         << "int32";
}

void TstPrefetchAtlas::readsWhatH5pyWrote()
{
    QFETCH(QStringList, args);
    QFETCH(QString, dtype);
    nlohmann::json w;
    const QString path = withPrefetch(QStringLiteral("written.atlas.h5"), args, &w);
    QVERIFY(!path.isEmpty());
    QCOMPARE(QString::fromStdString(w["dtype"].get<std::string>()), dtype);
    const AtlasFile atlas = AtlasFile::openReadOnly(path.toStdString());
    const std::optional<AtlasPrefetchInfo> info = atlas.prefetchInfo();
    QVERIFY(info.has_value());
    QCOMPARE(info->predictors, w["predictors"].get<std::vector<std::string>>());
    QCOMPARE(info->maxLookahead, 2);
    QCOMPARE(info->budget, w["budget"].get<int>());
    QCOMPARE(info->trainFraction, 0.5);
    QCOMPARE(info->splitSeed, uint64_t { 1234 });
    const auto train = w["train_sequences"].get<std::vector<int>>();
    QCOMPARE(info->trainSequences, std::vector<uint8_t>(train.begin(), train.end()));

    for (const auto& [key, ids] : w["ids"].items()) {
        const std::size_t s1 = key.find('/'), s2 = key.rfind('/');
        const std::string predictor = key.substr(0, s1);
        const int layer = std::stoi(key.substr(s1 + 1, s2 - s1 - 1));
        const int d = std::stoi(key.substr(s2 + 2));
        QCOMPARE(atlas.readPrefetchIds(predictor, layer, d), ids.get<std::vector<int32_t>>());
    }
    QCOMPARE(w["ids"].size(), std::size_t { 3 } * info->predictors.size()); // (0,1), (0,2), (1,1) per predictor

    for (const int layer : { 0, 1, 3 }) {
        const auto [values, counts] = atlas.readDefaultVectors(layer);
        const std::string key = std::to_string(layer);
        if (!w["default_vectors"].contains(key)) {
            QVERIFY(values.empty() && counts.empty());
            continue;
        }
        QCOMPARE(values, w["default_vectors"][key].get<std::vector<float>>());
        QCOMPARE(counts, w["default_vector_counts"][key].get<std::vector<int64_t>>());
    }
    for (const auto& [key, e] : w["learned"].items()) {
        const std::size_t s1 = key.find('/'), s2 = key.find('/', s1 + 1), s3 = key.rfind('/');
        const std::optional<AtlasLearnedEstimator> got = atlas.readLearnedEstimator(
            key.substr(0, s1), std::stoi(key.substr(s1 + 1, s2 - s1 - 1)), std::stoi(key.substr(s3 + 2)));
        QVERIFY(got.has_value());
        QCOMPARE(got->trainLoss, e["train_loss"].get<double>());
        QCOMPARE(got->heldoutLoss, e["heldout_loss"].get<double>());
        QCOMPARE(got->epochs, int64_t { 7 });
        QCOMPARE(got->trainTokens, int64_t { 40 });
        QCOMPARE(got->parameters.size(), std::size_t { 2 });
        for (const AtlasArray& a : got->parameters) {
            QVERIFY(e.contains(a.name));
            QCOMPARE(a.dims, e[a.name]["dims"].get<std::vector<uint64_t>>());
            const auto expected = e[a.name]["values"].get<std::vector<float>>();
            QCOMPARE(a.values, std::vector<double>(expected.begin(), expected.end()));
        }
    }
    QVERIFY(!atlas.readLearnedEstimator("linear", 1, 2).has_value()); // no layer 1 + 2 MoE layers

    // The adaptor: the recorded split, and a budget-k prefix of the stored rows.
    TraceSplit split;
    const RoutingTrace trace = readRoutingTrace(atlas, &split);
    QVERIFY(split.recorded);
    QCOMPARE(trace.trainSequences, info->trainSequences);
    const PredictionSet p = predictions(atlas, trace, Predictor::NextRouter, 0, 2, 2);
    const auto stored = w["ids"]["next-router/0/d2"].get<std::vector<int32_t>>();
    const auto B = static_cast<std::size_t>(info->budget);
    for (std::size_t t = 0; t < 40; ++t)
        for (std::size_t j = 0; j < 2; ++j)
            QCOMPARE(p.ids[t * 2 + j], stored[t * B + j]);
}

void TstPrefetchAtlas::missingDatasetIsNamed_data()
{
    QTest::addColumn<QString>("omit");
    QTest::addColumn<QString>("named");
    QTest::newRow("predictions") << "next-router/1/d1"
                                 << "/prefetch/next-router/1/d1";
    QTest::newRow("split") << "train_sequences"
                           << "/prefetch/train_sequences";
    QTest::newRow("default vector counts") << "default_vector_counts/1"
                                           << "/prefetch/default_vector_counts/1";
}

void TstPrefetchAtlas::missingDatasetIsNamed()
{
    QFETCH(QString, omit);
    QFETCH(QString, named);
    const QString path = withPrefetch(QStringLiteral("omitted.atlas.h5"), { QStringLiteral("--omit"), omit });
    QVERIFY(!path.isEmpty());
    const AtlasFile atlas = AtlasFile::openReadOnly(path.toStdString());
    const std::string message = errorOf<InputError>([&] {
        if (omit.startsWith(QStringLiteral("next-router")))
            atlas.readPrefetchIds("next-router", 1, 1);
        else if (omit == QStringLiteral("train_sequences"))
            atlas.prefetchInfo();
        else
            atlas.readDefaultVectors(1);
    });
    QVERIFY2(contains(message, named.toStdString()) && contains(message, path.toStdString()), message.c_str());
    if (omit.startsWith(QStringLiteral("next-router"))) {
        // Through the adaptor as well, and the other layers still read.
        const RoutingTrace trace = readRoutingTrace(atlas);
        QVERIFY_THROWS_EXCEPTION(InputError, predictions(atlas, trace, Predictor::NextRouter, 1, 1, 2));
        QCOMPARE(predictions(atlas, trace, Predictor::NextRouter, 0, 1, 2).ids.size(), std::size_t { 80 });
    }
}

void TstPrefetchAtlas::recordedLimits()
{
    nlohmann::json w;
    const QString path = withPrefetch(QStringLiteral("limits.atlas.h5"),
        { QStringLiteral("--max-lookahead"), QStringLiteral("1"), QStringLiteral("--budget"), QStringLiteral("3") },
        &w);
    QVERIFY(!path.isEmpty());
    const AtlasFile atlas = AtlasFile::openReadOnly(path.toStdString());
    const RoutingTrace trace = readRoutingTrace(atlas);
    QVERIFY(requestFieldOf([&] { predictions(atlas, trace, Predictor::NextRouter, 0, 2, 2); }).rfind("lookahead: ", 0)
        == 0);
    QVERIFY(
        requestFieldOf([&] { predictions(atlas, trace, Predictor::NextRouter, 0, 1, 4); }).rfind("budget: ", 0) == 0);
    QVERIFY(requestFieldOf([&] { predictions(atlas, trace, Predictor::NextRouter, 1, 2, 2); }).rfind("lookahead: ", 0)
        == 0);
    const std::string notRecorded = requestFieldOf([&] { predictions(atlas, trace, Predictor::Mlp, 0, 1, 2); });
    QVERIFY2(notRecorded.rfind("predictor: ", 0) == 0 && contains(notRecorded, "mlp"), notRecorded.c_str());
    QCOMPARE(
        predictions(atlas, trace, Predictor::Linear, 1, 1, 3).ids, w["ids"]["linear/1/d1"].get<std::vector<int32_t>>());
}

QTEST_GUILESS_MAIN(TstPrefetchAtlas)
#include "tst_prefetch_atlas.moc"
