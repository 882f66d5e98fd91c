// Updates of one atlas by several processes (docs/atlas-format.md, "Updates"), on copies of the
// demo atlas (resources/demo):
// - `moeatlas fisher` finding the atlas held by an update of this process waits for its commit,
//   then adds /fisher on top of it: both results are there;
// - `moeatlas score` and `moeatlas fisher` started together both succeed and both results stay;
// - three `moeatlas fisher` reruns leave the atlas within 5% of its size after the first (sizes
//   printed): a rerun does not keep the /fisher it replaced.
#include "atlas/atlas_file.h"
#include "test_support.h"
#include "util/file_lock.h"

#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QProcess>
#include <QTemporaryDir>
#include <QTest>

#include <hdf5.h>

#include <filesystem>
#include <thread>
#include <unistd.h>

using namespace moeatlas;
using namespace std::chrono_literals;

namespace {

AtlasResults marker(const std::string& tag)
{
    AtlasResults r;
    r.paramsJson = R"({"tag": ")" + tag + R"("})";
    r.inputsHash = tag;
    r.arrays.push_back({ "value", { 3 }, { 1, 2, 3 } });
    return r;
}

QStringList filesIn(const QString& atlas)
{
    return QDir(QFileInfo(atlas).path()).entryList(QDir::Files | QDir::Hidden, QDir::Name);
}

} // namespace

class TstCliUpdate : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    QString m_model, m_demoAtlas;
    int m_copies = 0;

    QString src(const QString& relative) const { return test::sourcePath(relative); }

    // A writable copy of the demo atlas in a directory of its own.
    QString copyDemo()
    {
        const QString dir = m_dir.filePath(QStringLiteral("run%1").arg(++m_copies));
        QDir().mkpath(dir);
        const QString path = dir + QStringLiteral("/demo.atlas.h5");
        if (!QFile::copy(m_demoAtlas, path))
            return {};
        QFile::setPermissions(path, QFile::ReadOwner | QFile::WriteOwner);
        return path;
    }

    // moeatlas fisher on the first 2 sequences per domain, mask form, no ablation (a few seconds).
    QStringList fisherArgs(const QString& atlas) const
    {
        return { QStringLiteral("fisher"), atlas, QStringLiteral("--max-samples"), QStringLiteral("2"),
            QStringLiteral("--forms"), QStringLiteral("mask"), QStringLiteral("--ablate"), QStringLiteral("none"),
            QStringLiteral("--threads"), QStringLiteral("1"), QStringLiteral("--checkpoint"), m_model };
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset (run through ctest)");
        m_model = src(QStringLiteral("resources/demo/model"));
        m_demoAtlas = src(QStringLiteral("resources/demo/demo.atlas.h5"));
        QVERIFY(QFile::exists(m_demoAtlas));
    }

    // This process holds an update; `moeatlas fisher` computes, then waits for the lock (the atlas
    // and the lock untouched meanwhile), then writes /fisher on top of what this update committed.
    void cliWaitsForAnUpdateInProgress()
    {
        const QString atlas = copyDemo();
        const std::string path = atlas.toStdString();
        LockWait wait;
        wait.purpose = "tst_cli_update holder";
        AtlasFile held = AtlasFile::openForUpdate(path, wait);

        QProcess fisher;
        fisher.start(test::cliExecutable(), fisherArgs(atlas));
        QVERIFY(fisher.waitForStarted());
        QByteArray err;
        QElapsedTimer clock;
        clock.start();
        while (!err.contains("peak RSS") && fisher.state() == QProcess::Running && clock.elapsed() < 300000) {
            fisher.waitForReadyRead(200);
            err += fisher.readAllStandardError();
        }
        QVERIFY2(err.contains("peak RSS"), err.constData()); // Fisher done, the update is next
        std::this_thread::sleep_for(1500ms);
        err += fisher.readAllStandardError();
        QVERIFY2(fisher.state() == QProcess::Running, err.constData());
        const LockHolder holder = FileLock::readHolder(AtlasFile::lockPathFor(path));
        QCOMPARE(holder.pid, static_cast<int64_t>(::getpid()));
        QCOMPARE(holder.purpose, std::string("tst_cli_update holder"));
        QCOMPARE(filesIn(atlas).size(), 3); // the atlas, its lock, this update's file: none of fisher's
        QVERIFY(!AtlasFile::openReadOnly(path).readResults("fisher"));

        held.writeResults("test/held", marker("held"));
        held.commitUpdate();
        QVERIFY(fisher.waitForFinished(120000));
        err += fisher.readAllStandardError();
        QCOMPARE(fisher.exitStatus(), QProcess::NormalExit);
        QVERIFY2(fisher.exitCode() == 0, err.constData());

        const AtlasFile a = AtlasFile::openReadOnly(path);
        QVERIFY(a.isComplete());
        QCOMPARE(a.readResults("test/held")->paramsJson, marker("held").paramsJson);
        QCOMPARE(a.resultGroups("fisher"),
            (std::vector<std::string> { "activation", "concentration", "magnitude", "mask" }));
        QVERIFY(a.readResults("scores/peu"));
        QCOMPARE(filesIn(atlas), QStringList { QStringLiteral("demo.atlas.h5") });
    }

    // score and fisher on one atlas at once: both succeed, neither result is lost.
    void scoreAndFisherTogether()
    {
        const QString atlas = copyDemo();
        const std::string path = atlas.toStdString();
        {
            // Without /scores and /statistics, so that score has something to write. The removed
            // groups' space stays in this copy; the updates below drop it.
            const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
            QVERIFY(file >= 0);
            QVERIFY(H5Ldelete(file, "/scores", H5P_DEFAULT) >= 0);
            QVERIFY(H5Ldelete(file, "/statistics", H5P_DEFAULT) >= 0);
            QVERIFY(H5Fclose(file) >= 0);
        }
        const auto before = QFileInfo(atlas).size();
        QProcess score, fisher;
        fisher.start(test::cliExecutable(), fisherArgs(atlas));
        score.start(test::cliExecutable(),
            { QStringLiteral("score"), atlas, QStringLiteral("--threads"), QStringLiteral("1") });
        QVERIFY(fisher.waitForStarted() && score.waitForStarted());
        QVERIFY(score.waitForFinished(300000));
        QVERIFY(fisher.waitForFinished(300000));
        const QByteArray scoreErr = score.readAllStandardError(), fisherErr = fisher.readAllStandardError();
        QVERIFY2(score.exitStatus() == QProcess::NormalExit && score.exitCode() == 0, scoreErr.constData());
        QVERIFY2(fisher.exitStatus() == QProcess::NormalExit && fisher.exitCode() == 0, fisherErr.constData());

        const AtlasFile a = AtlasFile::openReadOnly(path);
        QVERIFY(a.isComplete());
        const std::vector<std::string> criteria = a.resultGroups("scores");
        QVERIFY2(criteria.size() >= 5, std::to_string(criteria.size()).c_str());
        QVERIFY(a.readResults("scores/peu"));
        QVERIFY(a.readResults("statistics"));
        QCOMPARE(a.resultGroups("fisher"),
            (std::vector<std::string> { "activation", "concentration", "magnitude", "mask" }));
        QVERIFY(a.readResults("evaluation/default"));
        QCOMPARE(filesIn(atlas), QStringList { QStringLiteral("demo.atlas.h5") });
        qInfo("atlas without /scores, /statistics: %lld bytes; after score + fisher: %lld bytes", before,
            QFileInfo(atlas).size());
    }

    // Three fisher runs: runs 2 and 3 replace /fisher and leave the file within 5% of run 1's size.
    void fisherRerunsDoNotGrowTheAtlas()
    {
        const QString atlas = copyDemo();
        std::vector<qint64> sizes { QFileInfo(atlas).size() };
        for (int run = 1; run <= 3; ++run) {
            QElapsedTimer clock;
            clock.start();
            const auto r = test::runCli(fisherArgs(atlas));
            QCOMPARE(r.exitCode, 0);
            sizes.push_back(QFileInfo(atlas).size());
            qInfo("run %d: %lld bytes (%lld ms)", run, sizes.back(), clock.elapsed());
        }
        qInfo("demo atlas %lld bytes; after fisher runs 1-3: %lld, %lld, %lld", sizes[0], sizes[1], sizes[2], sizes[3]);
        QVERIFY(sizes[1] > sizes[0]);
        for (int run = 2; run <= 3; ++run)
            QVERIFY2(std::llabs(sizes[static_cast<size_t>(run)] - sizes[1]) * 20 <= sizes[1],
                qPrintable(QStringLiteral("run %1: %2 bytes, run 1: %3")
                               .arg(run)
                               .arg(sizes[static_cast<size_t>(run)])
                               .arg(sizes[1])));
        QCOMPARE(filesIn(atlas), QStringList { QStringLiteral("demo.atlas.h5") });
    }
};

QTEST_GUILESS_MAIN(TstCliUpdate)
#include "tst_cli_update.moc"
