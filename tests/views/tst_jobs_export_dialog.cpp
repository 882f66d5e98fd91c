// ExportDialog driven like a user would (fields set, Export clicked): the checkpoint it writes is
// byte-identical, file by file, to `moeatlas export SRC --plan P -o OUT` with the same options;
// a non-empty output is refused without "Replace" and replaced with it; a routing rule gives the
// bytes of `--routing RULE`, and a bad one is shown after its control's label with nothing written.
#include "jobs/export_dialog.h"
#include "jobs/job_runner.h"
#include "tst_charts_fixture.h"

#include "util/sha256.h"

#include <QDialogButtonBox>
#include <QPushButton>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::views;

namespace {

// Relative path -> SHA-256 of every regular file under dir.
std::map<std::string, std::string> digests(const fs::path& dir)
{
    std::map<std::string, std::string> out;
    for (const auto& entry : fs::recursive_directory_iterator(dir))
        if (entry.is_regular_file())
            out[fs::relative(entry.path(), dir).string()] = sha256File(entry.path());
    return out;
}

QPushButton* exportButton(ExportDialog& dialog)
{
    for (QAbstractButton* b : dialog.findChild<QDialogButtonBox*>()->buttons())
        if (b->text() == ExportDialog::tr("Export"))
            return qobject_cast<QPushButton*>(b);
    return nullptr;
}

} // namespace

class TstJobsExportDialog : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void sameBytesAsCli_data();
    void sameBytesAsCli();
    void nonEmptyOutputNeedsReplace();
    void closingWhileQueuedDropsTheExport();
    void routingRule();

private:
    QTemporaryDir m_dir;
    test::AtlasFixture m_f;
};

void TstJobsExportDialog::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    // Experts 1024 wide: about 13 MB of weights, so 1 MiB shards give many files.
    QVERIFY(test::buildAtlas(m_dir.path(), m_f, /*evaluate=*/false, /*expertWidth=*/1024));
}

void TstJobsExportDialog::sameBytesAsCli_data()
{
    QTest::addColumn<int>("shardMiB"); // 0 = the default (no flag)
    QTest::newRow("default shards") << 0;
    QTest::newRow("1 MiB shards") << 1;
}

void TstJobsExportDialog::sameBytesAsCli()
{
    QFETCH(int, shardMiB);
    const QString tag = QString::fromLatin1(QTest::currentDataTag()).replace(QLatin1Char(' '), QLatin1Char('-'));
    const QString cliOut = m_dir.filePath(QStringLiteral("cli-") + tag);
    const QString guiOut = m_dir.filePath(QStringLiteral("gui-") + tag);
    QStringList args { QStringLiteral("export"), m_f.model, QStringLiteral("--plan"), m_f.plan, QStringLiteral("-o"),
        cliOut };
    if (shardMiB > 0)
        args << QStringLiteral("--max-shard-mib") << QString::number(shardMiB);
    QCOMPARE(test::runMoeatlas(args).exitCode, 0);

    JobRunner runner;
    ExportDialog dialog(readPlan(m_f.plan.toStdString()), m_f.plan, m_f.model, &runner);
    dialog.setOutputDir(guiOut);
    if (shardMiB > 0)
        dialog.setMaxShardMiB(shardMiB);
    dialog.show();
    QSignalSpy done(&dialog, &ExportDialog::exportFinished);
    QPushButton* button = exportButton(dialog);
    QVERIFY(button);
    QTest::mouseClick(button, Qt::LeftButton);
    QVERIFY(dialog.isExporting());
    QVERIFY(dialog.isVisible()); // Export keeps the dialog open for progress
    QTRY_COMPARE_WITH_TIMEOUT(done.size(), 1, 300000);
    QVERIFY2(done.first().at(0).toBool(), qPrintable(done.first().at(1).toString()));
    QCOMPARE(done.first().at(1).toString(), guiOut);

    const auto cli = digests(cliOut.toStdString()), gui = digests(guiOut.toStdString());
    QVERIFY(cli.size() >= 3); // config, weights, model card (the generated model has no tokenizer)
    QVERIFY(cli.count("config.json") && cli.count("README.md"));
    for (const auto& [file, sha] : cli) {
        QVERIFY2(gui.count(file), file.c_str());
        QVERIFY2(gui.at(file) == sha, file.c_str());
    }
    QCOMPARE(gui.size(), cli.size());
    if (shardMiB == 1)
        QVERIFY(cli.count("model.safetensors.index.json") && cli.size() > 6);
}

void TstJobsExportDialog::nonEmptyOutputNeedsReplace()
{
    const QString out = m_dir.filePath(QStringLiteral("occupied"));
    fs::create_directories(out.toStdString());
    std::ofstream(fs::path(out.toStdString()) / "keep.txt") << "user data\n";
    const QString cliOut = m_dir.filePath(QStringLiteral("cli-default-shards"));
    QVERIFY(fs::exists(cliOut.toStdString())); // from sameBytesAsCli

    JobRunner runner;
    ExportDialog dialog(readPlan(m_f.plan.toStdString()), m_f.plan, m_f.model, &runner);
    QSignalSpy done(&dialog, &ExportDialog::exportFinished);
    QVERIFY(!dialog.startExport()); // no output directory yet
    QVERIFY(!dialog.statusText().isEmpty());
    dialog.setOutputDir(out);
    QVERIFY(dialog.startExport());
    QTRY_COMPARE_WITH_TIMEOUT(done.size(), 1, 300000);
    QCOMPARE(done.first().at(0).toBool(), false);
    QVERIFY2(
        done.first().at(1).toString().contains(QStringLiteral("not empty")), qPrintable(done.first().at(1).toString()));
    QVERIFY(dialog.statusText().contains(QStringLiteral("occupied")));
    QVERIFY(fs::exists(fs::path(out.toStdString()) / "keep.txt"));

    dialog.setForce(true);
    QVERIFY(dialog.startExport());
    QTRY_COMPARE_WITH_TIMEOUT(done.size(), 2, 300000);
    QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
    QVERIFY(!fs::exists(fs::path(out.toStdString()) / "keep.txt"));
    QVERIFY(digests(out.toStdString()) == digests(cliOut.toStdString()));
}

// An export queued behind another job, whose dialog is closed, must not run later unseen: it
// leaves the queue, and nothing appears under the output name.
void TstJobsExportDialog::closingWhileQueuedDropsTheExport()
{
    JobRunner runner;
    std::atomic<bool> release { false };
    runner.start(Job { QStringLiteral("blocker"), [&release](const ProgressFn&, const StopToken*) {
                          while (!release.load())
                              std::this_thread::sleep_for(std::chrono::milliseconds(5));
                          return JobResult {};
                      } });
    const QString out = m_dir.filePath(QStringLiteral("never"));
    QSignalSpy cancelled(&runner, &JobRunner::cancelled);
    QSignalSpy finished(&runner, &JobRunner::finished);
    {
        auto* dialog = new ExportDialog(readPlan(m_f.plan.toStdString()), m_f.plan, m_f.model, &runner);
        dialog->setAttribute(Qt::WA_DeleteOnClose);
        dialog->setOutputDir(out);
        QVERIFY(dialog->startExport());
        QVERIFY(dialog->isExporting());
        QCOMPARE(runner.queuedJobs(), 1);
        static_cast<QDialog*>(dialog)->reject(); // closed while its export waits in the queue
    }
    QCOMPARE(runner.queuedJobs(), 0);
    release = true;
    QTRY_COMPARE_WITH_TIMEOUT(finished.size(), 1, 300000);
    QTest::qWait(200);
    QCOMPARE(finished.size(), 1);
    QCOMPARE(cancelled.size(), 0);
    QVERIFY(!runner.isBusy());
    QVERIFY(!fs::exists(out.toStdString()));
}

void TstJobsExportDialog::routingRule()
{
    const QString cliOut = m_dir.filePath(QStringLiteral("cli-probmoe"));
    const QString guiOut = m_dir.filePath(QStringLiteral("gui-probmoe"));
    QCOMPARE(test::runMoeatlas(
                 { QStringLiteral("export"), m_f.model, QStringLiteral("--plan"), m_f.plan, QStringLiteral("-o"),
                     cliOut, QStringLiteral("--routing"), QStringLiteral("probmoe:1:2") })
                 .exitCode,
        0);
    JobRunner runner;
    ExportDialog dialog(readPlan(m_f.plan.toStdString()), m_f.plan, m_f.model, &runner);
    QSignalSpy done(&dialog, &ExportDialog::exportFinished);
    dialog.setOutputDir(guiOut);
    dialog.setRouting(QStringLiteral("probmoe:5:3"));
    QVERIFY(dialog.startExport());
    QTRY_COMPARE_WITH_TIMEOUT(done.size(), 1, 300000);
    QCOMPARE(done.first().at(0).toBool(), false);
    QVERIFY2(dialog.statusText().startsWith(QStringLiteral("Routing rule: "))
            && dialog.statusText().contains(QStringLiteral("KMIN 5 is greater than KMAX 3")),
        qPrintable(dialog.statusText()));
    QVERIFY(!fs::exists(guiOut.toStdString()));

    dialog.setRouting(QStringLiteral("probmoe:1:2"));
    QVERIFY(dialog.startExport());
    QTRY_COMPARE_WITH_TIMEOUT(done.size(), 2, 300000);
    QVERIFY2(done.last().at(0).toBool(), qPrintable(done.last().at(1).toString()));
    const auto cli = digests(cliOut.toStdString());
    QVERIFY(cli.count("modeling_moeatlas.py"));
    QVERIFY(digests(guiOut.toStdString()) == cli);
}

QTEST_MAIN(TstJobsExportDialog)
#include "tst_jobs_export_dialog.moc"
