// CaptureDialog driven like a user would (form filled, Capture clicked): the atlas it writes holds
// the tokens, router logits and top-k ids of `moeatlas capture` with the same arguments and is
// scored (the chained score job); invalid forms start no job; Close during a capture of a larger
// input cancels it (cancelled(), no file under the final name). MainWindow's Jobs menu: Score atlas
// scores the open atlas and reloads it; Capture new atlas… opens the atlas the dialog made.
#include "jobs/capture_dialog.h"
#include "jobs/job_runner.h"
#include "tst_charts_fixture.h"

#include "atlas/atlas_file.h"
#include "atlas_document.h"
#include "main_window.h"

#include <QAction>
#include <QDialogButtonBox>
#include <QFile>
#include <QFileInfo>
#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <utility>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::views;

namespace {

QPushButton* captureButton(CaptureDialog& dialog)
{
    for (QAbstractButton* b : dialog.findChild<QDialogButtonBox*>()->buttons())
        if (b->text() == CaptureDialog::tr("Capture"))
            return qobject_cast<QPushButton*>(b);
    return nullptr;
}

} // namespace

class TstJobsCaptureDialog : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void captureMatchesCliAndIsScored();
    void invalidFormStartsNothing_data();
    void invalidFormStartsNothing();
    void closeCancelsCapture();
    void scoreActionScoresOpenAtlas();
    void captureActionOpensNewAtlas();

private:
    void fillForm(CaptureDialog& dialog, const QString& output) const;

    QTemporaryDir m_dir;
    QTemporaryDir m_settings;
    test::AtlasFixture m_f;
    QString m_cliAtlas; // captured by the CLI, not scored
};

void TstJobsCaptureDialog::initTestCase()
{
    QVERIFY(m_dir.isValid() && m_settings.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    QStandardPaths::setTestModeEnabled(true);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_settings.path());
    QVERIFY(test::generateModel(m_dir.path(), m_f));
    m_cliAtlas = m_dir.filePath(QStringLiteral("cli.atlas.h5"));
    QCOMPARE(test::runMoeatlas(test::captureArgs(m_f, m_cliAtlas)).exitCode, 0);
}

// The form for test::captureArgs(m_f, output).
void TstJobsCaptureDialog::fillForm(CaptureDialog& dialog, const QString& output) const
{
    dialog.setCheckpoint(m_f.model);
    dialog.setDomains(
        { { QStringLiteral("math"), m_f.domainFiles[0] }, { QStringLiteral("code"), m_f.domainFiles[1] } });
    dialog.setSeqLen(64);
    dialog.setOutput(output);
}

void TstJobsCaptureDialog::captureMatchesCliAndIsScored()
{
    const QString gui = m_dir.filePath(QStringLiteral("gui.atlas.h5"));
    JobRunner runner;
    CaptureDialog dialog(&runner);
    fillForm(dialog, gui);
    QCOMPARE(dialog.domainsTable()->rowCount(), 2);
    dialog.show();
    QSignalSpy ready(&dialog, &CaptureDialog::atlasReady);
    QSignalSpy failed(&dialog, &CaptureDialog::failed);
    QSignalSpy started(&runner, &JobRunner::started);
    QPushButton* button = captureButton(dialog);
    QVERIFY(button);
    QTest::mouseClick(button, Qt::LeftButton);
    QVERIFY(dialog.isRunning());
    QVERIFY(dialog.isVisible()); // Capture keeps the dialog open for progress
    QTRY_VERIFY_WITH_TIMEOUT(!ready.isEmpty() || !failed.isEmpty(), 300000);
    QVERIFY2(failed.isEmpty(), failed.isEmpty() ? "" : qPrintable(failed.first().at(0).toString()));
    QCOMPARE(ready.first().at(0).toString(), gui);
    QVERIFY(!dialog.isRunning());
    // Two jobs: the capture, then the score of its atlas.
    QCOMPARE(started.size(), 2);
    QVERIFY(started.at(0).at(1).toString().startsWith(QStringLiteral("capture")));
    QVERIFY(started.at(1).at(1).toString().startsWith(QStringLiteral("score")));

    // Exact: the job and the CLI run the same capture code with the same options on this machine (the
    // same kernels, LibTorch's default thread count in both processes, the same tokens and micro-batches).
    const AtlasFile a = AtlasFile::openReadOnly(gui.toStdString());
    const AtlasFile b = AtlasFile::openReadOnly(m_cliAtlas.toStdString());
    QVERIFY(a.isComplete());
    QVERIFY(!a.tokens().empty());
    QCOMPARE(a.tokens(), b.tokens());
    QCOMPARE(a.model().moeLayers, b.model().moeLayers);
    for (const int layer : b.model().moeLayers) {
        QCOMPARE(a.readLogits(layer), b.readLogits(layer));
        QCOMPARE(a.readTopkIds(layer), b.readTopkIds(layer));
    }
    QVERIFY(a.readResults("scores/peu"));
    QVERIFY(a.readResults("statistics"));
    QVERIFY(!b.readResults("scores/peu")); // the CLI atlas was not scored
}

void TstJobsCaptureDialog::invalidFormStartsNothing_data()
{
    QTest::addColumn<QString>("what");
    QTest::addColumn<QString>("expected"); // part of the status line
    QTest::newRow("empty name") << QStringLiteral("empty name") << QStringLiteral("name is empty");
    QTest::newRow("bad name") << QStringLiteral("bad name") << QStringLiteral("letters, digits");
    QTest::newRow("missing file") << QStringLiteral("missing file") << QStringLiteral("no such file");
    QTest::newRow("duplicate names") << QStringLiteral("duplicate names") << QStringLiteral("listed twice");
    QTest::newRow("no domains") << QStringLiteral("no domains") << QStringLiteral("at least one");
    QTest::newRow("no checkpoint") << QStringLiteral("no checkpoint") << QStringLiteral("checkpoint");
    QTest::newRow("no output") << QStringLiteral("no output") << QStringLiteral("output");
    QTest::newRow("existing output") << QStringLiteral("existing output") << QStringLiteral("already exists");
}

void TstJobsCaptureDialog::invalidFormStartsNothing()
{
    QFETCH(QString, what);
    QFETCH(QString, expected);
    const QString out = m_dir.filePath(QStringLiteral("invalid.atlas.h5"));
    // An atlas in the way: a copy, so the forced run below cannot touch the CLI's atlas.
    const QString existing = m_dir.filePath(QStringLiteral("existing.atlas.h5"));
    if (!QFileInfo::exists(existing))
        QVERIFY(QFile::copy(m_cliAtlas, existing));
    JobRunner runner;
    CaptureDialog dialog(&runner);
    fillForm(dialog, out);
    const QString math = m_f.domainFiles[0], code = m_f.domainFiles[1];
    if (what == QLatin1String("empty name"))
        dialog.setDomains({ { QStringLiteral("math"), math }, { QString(), code } });
    else if (what == QLatin1String("bad name"))
        dialog.setDomains({ { QStringLiteral("ma th"), math } });
    else if (what == QLatin1String("missing file"))
        dialog.setDomains({ { QStringLiteral("math"), m_dir.filePath(QStringLiteral("nope.jsonl")) } });
    else if (what == QLatin1String("duplicate names"))
        dialog.setDomains({ { QStringLiteral("math"), math }, { QStringLiteral("math"), code } });
    else if (what == QLatin1String("no domains"))
        dialog.setDomains({});
    else if (what == QLatin1String("no checkpoint"))
        dialog.setCheckpoint(QString());
    else if (what == QLatin1String("no output"))
        dialog.setOutput(QString());
    else if (what == QLatin1String("existing output"))
        dialog.setOutput(existing);
    QSignalSpy started(&runner, &JobRunner::started);
    QVERIFY(!dialog.start());
    QVERIFY2(dialog.statusText().contains(expected, Qt::CaseInsensitive), qPrintable(dialog.statusText()));
    QVERIFY(!dialog.isRunning());
    QVERIFY(!runner.isBusy());
    QCOMPARE(runner.queuedJobs(), 0);
    QCOMPARE(started.size(), 0);
    QVERIFY(!fs::exists(out.toStdString()));
    QVERIFY(!fs::exists(out.toStdString() + ".partial"));
    QVERIFY(!fs::exists(existing.toStdString() + ".partial"));
    if (what == QLatin1String("existing output")) {
        // "Replace an existing atlas" (--force) lets it start; cancel at once.
        QSignalSpy cancelled(&dialog, &CaptureDialog::cancelled);
        dialog.setForce(true);
        QVERIFY(dialog.start());
        dialog.cancel();
        QTRY_COMPARE_WITH_TIMEOUT(cancelled.size(), 1, 300000);
    }
}

void TstJobsCaptureDialog::closeCancelsCapture()
{
    // 4 layers and 2000 documents of 64 tokens per domain: 16 micro-batches per layer, several
    // seconds of capture; the cancel comes from the first progress report.
    const QString dir = m_dir.filePath(QStringLiteral("big"));
    QVERIFY(QDir().mkpath(dir));
    test::AtlasFixture big;
    QVERIFY(test::generateModel(dir, big, /*layers=*/4, /*docs=*/2000));
    const QString atlas = QDir(dir).filePath(QStringLiteral("big.atlas.h5"));

    JobRunner runner;
    runner.setProgressInterval(std::chrono::milliseconds(0));
    CaptureDialog dialog(&runner);
    dialog.setCheckpoint(big.model);
    dialog.setDomains(
        { { QStringLiteral("math"), big.domainFiles[0] }, { QStringLiteral("code"), big.domainFiles[1] } });
    dialog.setSeqLen(64);
    dialog.setOutput(atlas);
    dialog.show();
    QSignalSpy cancelled(&dialog, &CaptureDialog::cancelled);
    QSignalSpy runnerCancelled(&runner, &JobRunner::cancelled);
    QSignalSpy ready(&dialog, &CaptureDialog::atlasReady);
    QSignalSpy failed(&dialog, &CaptureDialog::failed);
    QSignalSpy progress(&runner, &JobRunner::progress);
    bool closed = false;
    connect(&runner, &JobRunner::progress, &dialog, [&dialog, &closed] {
        if (!std::exchange(closed, true))
            dialog.findChild<QDialogButtonBox*>()->button(QDialogButtonBox::Close)->click();
    });
    QVERIFY(dialog.start());
    QTRY_VERIFY_WITH_TIMEOUT(!cancelled.isEmpty() || !ready.isEmpty() || !failed.isEmpty(), 300000);
    QVERIFY(!progress.isEmpty());
    QCOMPARE(ready.size(), 0);
    QCOMPARE(failed.size(), 0);
    QCOMPARE(cancelled.size(), 1);
    QCOMPARE(runnerCancelled.size(), 1);
    QVERIFY(!dialog.isRunning());
    QVERIFY(!dialog.isVisible()); // closed once the capture had stopped
    QVERIFY(!fs::exists(atlas.toStdString()));
    QVERIFY(fs::exists(atlas.toStdString() + ".partial")); // kept for capture --resume
    QVERIFY(dialog.statusText().contains(QStringLiteral("cancelled")));
}

void TstJobsCaptureDialog::scoreActionScoresOpenAtlas()
{
    const QString atlas = m_dir.filePath(QStringLiteral("score-me.atlas.h5"));
    QVERIFY(QFile::copy(m_cliAtlas, atlas));
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    QVERIFY(!w.scoreAction()->isEnabled()); // nothing open
    QCOMPARE(w.scoreAtlas(), 0);
    QVERIFY(w.openAtlasBlocking(atlas));
    QVERIFY(w.document()->snapshot()->criteria().isEmpty());
    QVERIFY(w.scoreAction()->isEnabled());
    QSignalSpy loaded(w.document(), &AtlasDocument::loaded);
    w.scoreAction()->trigger();
    QVERIFY(w.jobRunner()->isBusy());
    QTRY_COMPARE_WITH_TIMEOUT(loaded.size(), 1, 300000);
    QVERIFY(w.document()->snapshot()->criteria().contains(QStringLiteral("peu")));
    QVERIFY(AtlasFile::openReadOnly(atlas.toStdString()).readResults("scores/peu"));
    QVERIFY2(w.logText().contains(QStringLiteral("Scoring")), qPrintable(w.logText()));
    w.document()->close();
    QVERIFY(!w.scoreAction()->isEnabled());
}

void TstJobsCaptureDialog::captureActionOpensNewAtlas()
{
    const QString atlas = m_dir.filePath(QStringLiteral("window.atlas.h5"));
    MainWindow w;
    w.setErrorDialogsEnabled(false);
    CaptureDialog* dialog = w.showCaptureDialog();
    QVERIFY(dialog && dialog->isVisible());
    QVERIFY(dialog->parent() == &w);
    fillForm(*dialog, atlas);
    QSignalSpy loaded(w.document(), &AtlasDocument::loaded);
    QVERIFY(dialog->start());
    QTRY_COMPARE_WITH_TIMEOUT(loaded.size(), 1, 300000);
    QCOMPARE(QFileInfo(loaded.first().at(0).toString()).absoluteFilePath(), QFileInfo(atlas).absoluteFilePath());
    QVERIFY(w.document()->snapshot()->criteria().contains(QStringLiteral("peu")));
    QVERIFY(w.scoreAction()->isEnabled());
}

QTEST_MAIN(TstJobsCaptureDialog)
#include "tst_jobs_capture_dialog.moc"
