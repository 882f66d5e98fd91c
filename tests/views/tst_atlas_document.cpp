// AtlasDocument: what it exposes of an atlas (model, domains, scores, statistics, evaluations,
// plan costs) equals what AtlasFile reads independently; errors name the file; a later open
// supersedes an earlier one.
#include "atlas_document.h"
#include "views_fixture.h"

#include <QDir>
#include <QFile>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

using namespace moeatlas;
using namespace moeatlas::views;

class TstAtlasDocument : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void blockingOpenMatchesAtlas();
    void scoresMatchAtlas_data();
    void scoresMatchAtlas();
    void statisticsAndEvaluations();
    void asyncOpenEmitsLoaded();
    void errorsNameTheFile_data();
    void errorsNameTheFile();
    void laterOpenSupersedes();
    void costsWithoutCheckpoint();

private:
    QTemporaryDir m_dir;
    QString m_atlas;
};

void TstAtlasDocument::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QString error;
    m_atlas = test::buildViewsAtlas(m_dir.path(), &error);
    QVERIFY2(!m_atlas.isEmpty(), qPrintable(error));
}

void TstAtlasDocument::blockingOpenMatchesAtlas()
{
    AtlasDocument doc;
    QSignalSpy loaded(&doc, &AtlasDocument::loaded);
    QSignalSpy changed(&doc, &AtlasDocument::changed);
    QVERIFY(doc.openBlocking(m_atlas));
    QCOMPARE(loaded.count(), 1);
    QCOMPARE(changed.count(), 1);
    QCOMPARE(doc.path(), m_atlas);
    const auto s = doc.snapshot();
    QVERIFY(s);

    const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
    QVERIFY(s->complete);
    QCOMPARE(s->model.moeLayers, atlas.model().moeLayers);
    QCOMPARE(s->numLayers(), 3);
    QCOMPARE(s->numExperts(), 8);
    QCOMPARE(s->model.topK, 2);
    QCOMPARE(s->model.configSha256, atlas.model().configSha256);
    QCOMPARE(s->domainNames(), (QStringList { QStringLiteral("math"), QStringLiteral("code") }));
    for (std::size_t d = 0; d < s->domains.size(); ++d)
        QCOMPARE(s->domains[d].numTokens, atlas.calibration().domains[d].numTokens);
    QStringList criteria;
    for (const std::string& c : atlas.resultGroups("scores"))
        criteria << QString::fromStdString(c);
    criteria.sort();
    QCOMPARE(s->criteria(), criteria);
    QVERIFY(s->criteria().contains(QStringLiteral("peu")));
    QVERIFY(s->criteria().contains(QStringLiteral("soft_mass")));
    // The checkpoint is where the capture left it: exact costs.
    QVERIFY2(s->hasCosts, qPrintable(s->costsNote));
    QCOMPARE(s->planContext.costs.expertBytes.size(), std::size_t(3));
    QCOMPARE(s->planContext.topK, 2);
}

void TstAtlasDocument::scoresMatchAtlas_data()
{
    QTest::addColumn<QString>("criterion");
    for (const char* c : { "peu", "frequency", "soft_mass", "act_logits", "random" })
        QTest::newRow(c) << QString::fromLatin1(c);
}

void TstAtlasDocument::scoresMatchAtlas()
{
    QFETCH(QString, criterion);
    AtlasDocument doc;
    QVERIFY(doc.openBlocking(m_atlas));
    const auto s = doc.snapshot();
    const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
    const auto group = atlas.readResults("scores/" + criterion.toStdString());
    QVERIFY(group);
    const AtlasArray* expected = group->find("value");
    QVERIFY(expected);
    const AtlasArray* value = s->scoreArray(criterion.toStdString());
    QVERIFY(value);
    QCOMPARE(value->dims, expected->dims);
    QCOMPARE(value->values, expected->values);
    // Plan-ready tables: domain rows then the pooled row, [l][e].
    const auto it = s->scores.find(criterion.toStdString());
    QVERIFY(it != s->scores.end());
    const std::size_t L = 3, E = 8;
    for (std::size_t d = 0; d < 2; ++d)
        for (std::size_t l = 0; l < L; ++l)
            for (std::size_t e = 0; e < E; ++e)
                QCOMPARE(it->second.domains[d].values[l][e], expected->values[(d * L + l) * E + e]);
    QCOMPARE(it->second.pooled.values[2][7], expected->values[(2 * L + 2) * E + 7]);
}

void TstAtlasDocument::statisticsAndEvaluations()
{
    AtlasDocument doc;
    QVERIFY(doc.openBlocking(m_atlas));
    const auto s = doc.snapshot();
    const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
    const auto stats = atlas.readResults("statistics");
    QVERIFY(stats && s->statistics);
    QCOMPARE(s->statisticsArray("load_share")->values, stats->find("load_share")->values);
    QCOMPARE(s->statisticsArray("specialisation")->dims, stats->find("specialisation")->dims);
    QVERIFY(!s->statisticsArray("no_such_array"));

    const std::vector<std::string> labels = atlas.resultGroups("evaluation");
    // The fixture's sweep (default) and its routing-rule evaluation (routing).
    QCOMPARE(labels, (std::vector<std::string> { "default", "routing" }));
    QCOMPARE(s->evaluations.size(), std::size_t(2));
    const AtlasResults& eval = s->evaluations.at("default");
    const auto expected = atlas.readResults("evaluation/default");
    QCOMPARE(eval.find("nll")->values, expected->find("nll")->values);
    QCOMPARE(eval.paramsJson, expected->paramsJson);
    // full + (2 specialists + generalist) x 1 criterion x 2 sparsities + 2 random x 2 sparsities.
    QCOMPARE(eval.find("sparsity")->dims, (std::vector<uint64_t> { 11 }));
}

void TstAtlasDocument::asyncOpenEmitsLoaded()
{
    AtlasDocument doc;
    QSignalSpy loaded(&doc, &AtlasDocument::loaded);
    QSignalSpy failed(&doc, &AtlasDocument::failed);
    doc.open(m_atlas);
    QVERIFY(doc.isLoading());
    QVERIFY(!doc.isOpen());
    QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 60000);
    QCOMPARE(failed.count(), 0);
    QVERIFY(!doc.isLoading());
    QCOMPARE(doc.snapshot()->numExperts(), 8);
}

void TstAtlasDocument::errorsNameTheFile_data()
{
    QTest::addColumn<QString>("name");
    QTest::addColumn<QByteArray>("contents");
    QTest::newRow("missing") << QStringLiteral("missing.atlas.h5") << QByteArray();
    QTest::newRow("not hdf5") << QStringLiteral("text.atlas.h5") << QByteArray("not an atlas\n");
}

void TstAtlasDocument::errorsNameTheFile()
{
    QFETCH(QString, name);
    QFETCH(QByteArray, contents);
    const QString path = m_dir.filePath(name);
    if (!contents.isEmpty()) {
        QFile f(path);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write(contents);
    }
    AtlasDocument doc;
    QSignalSpy failed(&doc, &AtlasDocument::failed);
    doc.open(path);
    QTRY_COMPARE_WITH_TIMEOUT(failed.count(), 1, 60000);
    const QString message = failed.at(0).at(0).toString();
    QVERIFY2(message.contains(path), qPrintable(message));
    QVERIFY(!doc.isOpen());
    QVERIFY(!doc.isLoading());
    QVERIFY(!doc.openBlocking(path));
}

void TstAtlasDocument::laterOpenSupersedes()
{
    AtlasDocument doc;
    QSignalSpy loaded(&doc, &AtlasDocument::loaded);
    QSignalSpy failed(&doc, &AtlasDocument::failed);
    doc.open(m_dir.filePath(QStringLiteral("missing.atlas.h5")));
    doc.open(m_atlas);
    QTRY_COMPARE_WITH_TIMEOUT(loaded.count(), 1, 60000);
    QTest::qWait(200); // the first job's result, if it arrives late, must be dropped
    QCOMPARE(failed.count(), 0);
    QCOMPARE(doc.path(), m_atlas);
}

void TstAtlasDocument::costsWithoutCheckpoint()
{
    // Move the checkpoint away: scores and plans still work, savings are explained as missing.
    QDir dir(m_dir.path());
    QVERIFY(dir.rename(QStringLiteral("model"), QStringLiteral("moved")));
    AtlasDocument doc;
    const bool opened = doc.openBlocking(m_atlas);
    QVERIFY(dir.rename(QStringLiteral("moved"), QStringLiteral("model")));
    QVERIFY(opened);
    QVERIFY(!doc.snapshot()->hasCosts);
    QVERIFY2(doc.snapshot()->costsNote.contains(QStringLiteral("not found")), qPrintable(doc.snapshot()->costsNote));
    QCOMPARE(doc.snapshot()->planContext.topK, 2);
    QVERIFY(!doc.snapshot()->scores.empty());
}

QTEST_GUILESS_MAIN(TstAtlasDocument)
#include "tst_atlas_document.moc"
