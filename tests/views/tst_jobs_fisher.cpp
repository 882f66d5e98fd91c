// The "Compute Fisher" job: through a JobRunner it writes the Fisher tables and the ablation that
// `moeatlas fisher` writes for the same choices; cancelled or failed, it leaves the atlas byte for
// byte as it was; from the main window it reloads the atlas into the Fisher tab.
#include "atlas_document.h"
#include "charts/fisher_view.h"
#include "fisher/fisher_ablation.h"
#include "fisher/fisher_store.h"
#include "jobs/core_jobs.h"
#include "jobs/job_runner.h"
#include "main_window.h"
#include "test_io.h"
#include "util/sha256.h"
#include "views_fixture.h"

#include <nlohmann/json.hpp>

#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

FisherOptions maskOnly()
{
    FisherOptions o;
    o.weightForm = o.gradAbs = false;
    o.activation = o.magnitude = false;
    return o;
}

// The GUI job and `moeatlas fisher` run the same core functions with the same options, in two processes
// on this machine, each with LibTorch's default thread count (the job on a worker thread): the same
// numbers, unless the two thread counts differ, when OpenBLAS' threads (the Fisher pass) and ATen's
// thread-split path (the ablation's evaluation) sum in another order. Hence:
// - scores within kReorderRtol of the largest score of their array (test_io.h);
// - mean losses within 1e-6 relative: this random model (init std 0.02) has logits near 0 and losses
//   near ln 256 = 5.5, so a reordering moves a loss by a few ulp of 5.5 at most, on any CPU.
bool sameScores(const std::vector<double>& a, const std::vector<double>& b)
{
    if (a.size() != b.size())
        return false;
    double err = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        err = std::max(err, std::abs(a[i] - b[i]));
        scale = std::max(scale, std::abs(b[i]));
    }
    return err <= test::kReorderRtol * scale;
}

bool close(double a, double b)
{
    return std::abs(a - b) <= 1e-6 * std::max(1.0, std::abs(b));
}

} // namespace

class TstJobsFisher : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void jobWritesWhatCliWrites();
    void cancelLeavesAtlasUnchanged();
    void failureLeavesAtlasUnchanged();
    void mainWindowComputesAndReloads();

private:
    QString copyOfPlain(const QString& name);

    QTemporaryDir m_dir;
    QTemporaryDir m_settings;
    QString m_plain;
};

QString TstJobsFisher::copyOfPlain(const QString& name)
{
    const QString path = m_dir.filePath(name);
    QFile::remove(path);
    return QFile::copy(m_plain, path) ? path : QString();
}

void TstJobsFisher::initTestCase()
{
    QVERIFY(m_dir.isValid() && m_settings.isValid());
    QStandardPaths::setTestModeEnabled(true);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_settings.path());
    QString error;
    m_plain = test::buildViewsAtlas(m_dir.path(), &error);
    QVERIFY2(!m_plain.isEmpty(), qPrintable(error));
}

void TstJobsFisher::jobWritesWhatCliWrites()
{
    const QString cli = copyOfPlain(QStringLiteral("cli.atlas.h5"));
    const QString gui = copyOfPlain(QStringLiteral("gui.atlas.h5"));
    QString error;
    QVERIFY2(test::addFisherTables(cli, &error, QStringLiteral("0,10"),
                 { QStringLiteral("--forms"), QStringLiteral("mask"), QStringLiteral("--no-baselines") }),
        qPrintable(error));

    JobRunner runner;
    QSignalSpy finished(&runner, &JobRunner::finished);
    QSignalSpy output(&runner, &JobRunner::outputReady);
    FisherJobParams params;
    params.atlas = gui.toStdString();
    params.options = maskOnly();
    params.ablate = std::vector<int64_t> { 0, 10 };
    runner.start(fisherJob(params));
    QVERIFY(finished.wait(300000));
    QVERIFY2(finished.first().at(0).toBool(), qPrintable(finished.first().at(1).toString()));
    QCOMPARE(output.first().at(0).toString(), gui);

    const AtlasFile a = AtlasFile::openReadOnly(cli.toStdString());
    const AtlasFile b = AtlasFile::openReadOnly(gui.toStdString());
    const std::optional<FisherSummary> sa = readFisherSummary(a), sb = readFisherSummary(b);
    QVERIFY(sa && sb);
    QCOMPARE(sb->domains, sa->domains);
    QCOMPARE(sb->samples, sa->samples);
    QCOMPARE(sb->tokens, sa->tokens);
    QCOMPARE(sb->forms.size(), std::size_t(1));
    QCOMPARE(sb->forms[0].experts.size(), sa->forms[0].experts.size());
    QVERIFY(sameScores(sb->forms[0].experts, sa->forms[0].experts));
    const FisherTable ua = readFisherTable(a, "mask"), ub = readFisherTable(b, "mask");
    QVERIFY(sameScores(
        std::vector<double>(ub.units.begin(), ub.units.end()), std::vector<double>(ua.units.begin(), ua.units.end())));
    const nlohmann::json pa = nlohmann::json::parse(sa->params), pb = nlohmann::json::parse(sb->params);
    for (const char* key : { "checkpoint", "config_sha256", "forms", "layers", "domains", "samples", "tokens" })
        QVERIFY2(pb.at(key) == pa.at(key), key);
    // The token source names the atlas (the two copies differ only there).
    QString source = QString::fromStdString(pa.at("token_source").get<std::string>());
    QCOMPARE(QString::fromStdString(pb.at("token_source").get<std::string>()), source.replace(cli, gui));

    const std::optional<FisherAblationResults> aa = readFisherAblation(a), ab = readFisherAblation(b);
    QVERIFY(aa && ab);
    QCOMPARE(ab->form, std::string("mask"));
    QCOMPARE(ab->variants.size(), aa->variants.size());
    for (std::size_t v = 0; v < aa->variants.size(); ++v) {
        QCOMPARE(ab->variants[v].name, aa->variants[v].name);
        for (std::size_t d = 0; d < aa->domains.size(); ++d)
            QVERIFY(close(ab->variants[v].nll[d], aa->variants[v].nll[d]));
    }
}

void TstJobsFisher::cancelLeavesAtlasUnchanged()
{
    const QString atlas = copyOfPlain(QStringLiteral("cancel.atlas.h5"));
    const std::string before = sha256File(atlas.toStdString());
    JobRunner runner;
    runner.setProgressInterval(std::chrono::milliseconds(0));
    QSignalSpy finished(&runner, &JobRunner::finished);
    QSignalSpy cancelled(&runner, &JobRunner::cancelled);
    // Cancel at the first progress report (the Fisher pass has started).
    connect(&runner, &JobRunner::progress, &runner, &JobRunner::cancel);
    FisherJobParams params;
    params.atlas = atlas.toStdString();
    runner.start(fisherJob(params));
    QVERIFY(finished.wait(300000));
    QCOMPARE(cancelled.count(), 1);
    QVERIFY(!finished.first().at(0).toBool());
    QCOMPARE(sha256File(atlas.toStdString()), before);
    QVERIFY(!AtlasFile::openReadOnly(atlas.toStdString()).readResults("fisher"));
}

void TstJobsFisher::failureLeavesAtlasUnchanged()
{
    const QString atlas = copyOfPlain(QStringLiteral("fail.atlas.h5"));
    const std::string before = sha256File(atlas.toStdString());
    JobRunner runner;
    QSignalSpy failed(&runner, &JobRunner::failed);
    FisherJobParams params;
    params.atlas = atlas.toStdString();
    params.options = maskOnly();
    params.options.maskForm = false; // no gradient form
    runner.start(fisherJob(params));
    QVERIFY(failed.wait(60000));
    QVERIFY(failed.first().at(0).toString().contains(QStringLiteral("mask, weight and grad_abs")));
    QCOMPARE(sha256File(atlas.toStdString()), before);
}

void TstJobsFisher::mainWindowComputesAndReloads()
{
    const QString atlas = copyOfPlain(QStringLiteral("window.atlas.h5"));
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QVERIFY(w.openAtlasBlocking(atlas));
    QVERIFY(!w.fisherView()->hasFisher());
    QVERIFY(w.fisherAction()->isEnabled());
    QSignalSpy loaded(w.document(), &AtlasDocument::loaded);
    FisherJobParams params;
    params.options = maskOnly();
    params.ablate.reset();
    QVERIFY(w.computeFisher(params) > 0);
    QVERIFY(loaded.wait(300000));
    QVERIFY(w.fisherView()->hasFisher());
    QCOMPARE(w.fisherView()->forms(), QStringList { QStringLiteral("mask") });
    QVERIFY(w.logText().contains(QStringLiteral("Fisher of")));
}

QTEST_MAIN(TstJobsFisher)
#include "tst_jobs_fisher.moc"
