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
#include "util/sha256.h"
#include "views_fixture.h"

#include <nlohmann/json.hpp>

#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTest>

#include <algorithm>

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

// The GUI job and `moeatlas fisher` make the same core calls (workflows/fisher_workflow.h) with the
// same options, in two processes of this binary's build on this machine, each at LibTorch's default
// thread count (the tests' OMP_NUM_THREADS; the job's worker thread starts from the same default): the
// same operations on the same shapes, so every stored number is equal bit for bit.
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
    FisherRequest params;
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
    QCOMPARE(sb->forms[0].experts, sa->forms[0].experts);
    QCOMPARE(sb->forms[0].concentration, sa->forms[0].concentration);
    const FisherTable ua = readFisherTable(a, "mask"), ub = readFisherTable(b, "mask");
    QCOMPARE(ub.units, ua.units);
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
            QCOMPARE(ab->variants[v].nll[d], aa->variants[v].nll[d]);
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
    FisherRequest params;
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
    FisherRequest params;
    params.atlas = atlas.toStdString();
    params.options = maskOnly();
    params.options.maskForm = false; // no gradient form
    runner.start(fisherJob(params));
    QVERIFY(failed.wait(60000));
    QVERIFY(failed.first().at(0).toString().contains(QStringLiteral("mask, weight, grad_abs")));
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
    FisherRequest params;
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
