// Fault tests of every writer but capture (which tst_cli_capture and tst_atlas_file cover): the
// demo model and copies of the demo atlas (resources/demo) under SIGKILL at seeded random points and
// under a full disk (RLIMIT_FSIZE of the child, test::runCliFaulty).
// - SIGKILL: `export`, `merge` (new destinations) leave the destination absent or complete and valid
//   (export: its SHA-256 manifest verifies and the checkpoint opens; merge: the atlas opens complete),
//   the sources byte-identical; `score`, `eval --atlas`, `fisher` (updates in place under the lock)
//   leave the atlas valid with its routing data unchanged. Then a rerun succeeds and leaves no
//   temporary file behind.
// - Full disk: exit 1, a message naming the file and "File too large", nothing under the final name,
//   no partial output left, the source unchanged.
// Kill points per command: kWholeRun uniform in [0, 1.25 x a clean run's time] from the start and
// kWritePhase uniform in [0, 1.25 x how long the clean run's temporary output existed] from the moment it
// appears; mt19937 seeded with kSeed (printed), so a failure can be replayed.
#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_manifest.h"
#include "test_support.h"
#include "util/sha256.h"

#include <QDir>
#include <QElapsedTimer>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <functional>
#include <map>
#include <random>

namespace fs = std::filesystem;
using namespace moeatlas;

namespace {

constexpr uint32_t kSeed = 21;
constexpr int kWholeRun = 3; // kill points per command over the whole run
constexpr int kWritePhase = 4; // and over its write phase

// sha256 of every regular file under `path` (a file or a directory), by relative name.
std::map<std::string, std::string> hashes(const fs::path& path)
{
    std::map<std::string, std::string> out;
    if (fs::is_regular_file(path)) {
        out[path.filename().string()] = sha256File(path);
        return out;
    }
    for (const auto& e : fs::recursive_directory_iterator(path))
        if (e.is_regular_file())
            out[e.path().lexically_relative(path).string()] = sha256File(e.path());
    return out;
}

QStringList filesIn(const QString& dir)
{
    return QDir(dir).entryList(QDir::Files | QDir::Dirs | QDir::NoDotAndDotDot | QDir::Hidden, QDir::Name);
}

} // namespace

class TstCliFaults : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    QString m_model, m_demoAtlas, m_plan;
    int m_count = 0;
    std::mt19937 m_rng { kSeed };

    QString src(const QString& relative) const { return test::sourcePath(relative); }

    // A fresh directory under the suite's temporary one.
    QString newDir(const QString& tag)
    {
        const QString dir = m_dir.filePath(tag + QString::number(++m_count));
        QDir().mkpath(dir);
        return dir;
    }

    // A writable copy of the demo atlas in a directory of its own.
    QString copyDemo(const QString& tag)
    {
        const QString path = newDir(tag) + QStringLiteral("/demo.atlas.h5");
        if (!QFile::copy(m_demoAtlas, path))
            return {};
        QFile::setPermissions(path, QFile::ReadOwner | QFile::WriteOwner);
        return path;
    }

    struct CleanRun {
        qint64 totalMs = 0; // start to exit
        qint64 writeMs = -1; // how long its temporary output existed, until renamed (-1: never seen)
    };
    struct KillPoint {
        int delayMs = 0;
        bool fromWrite = false; // counted from the temporary output's appearance, not the start
    };

    // Runs `args` once cleanly (it must succeed), timing it and its write phase (`temporary` true).
    CleanRun cleanRun(const QStringList& args, const std::function<bool()>& temporary)
    {
        const test::FaultResult f = test::runCliFaulty(args, -1, 0, 600000, temporary);
        [&] { QVERIFY2(f.result.exitCode == 0, qPrintable(f.result.stdErr)); }();
        return { f.endedAtMs, f.armedAtMs >= 0 ? f.disarmedAtMs - f.armedAtMs : -1 };
    }

    // kWholeRun points uniform over [0, 1.25 x the whole run] and kWritePhase over [0, 1.25 x the write
    // phase], counted from when the temporary output appears: start-up (loading LibTorch) takes most of
    // a demo-sized run, and points over the whole run alone rarely land in the writing.
    std::vector<KillPoint> killPoints(const CleanRun& clean)
    {
        std::vector<KillPoint> points;
        std::uniform_int_distribution<int> whole(0, static_cast<int>(clean.totalMs * 5 / 4) + 1);
        for (int i = 0; i < kWholeRun; ++i)
            points.push_back({ whole(m_rng), false });
        if (clean.writeMs < 0) {
            qWarning("the clean run's temporary output was never seen: no write-phase kill points");
            return points;
        }
        std::uniform_int_distribution<int> write(0, static_cast<int>(clean.writeMs * 5 / 4) + 1);
        for (int i = 0; i < kWritePhase; ++i)
            points.push_back({ write(m_rng), true });
        return points;
    }

    static test::FaultResult killAt(
        const QStringList& args, const KillPoint& point, const std::function<bool()>& temporary)
    {
        return test::runCliFaulty(args, point.delayMs, 0, 600000, point.fromWrite ? temporary : nullptr);
    }

    // Update commands (score, eval --atlas, fisher): kill at random points, check the atlas, rerun.
    void killUpdate(const QString& tag, const std::function<QStringList(const QString&)>& argsFor, const char* group)
    {
        const QString atlas = copyDemo(tag);
        QVERIFY(!atlas.isEmpty());
        const AtlasFile demo = AtlasFile::openReadOnly(m_demoAtlas.toStdString());
        const QString dir = QFileInfo(atlas).path();
        const auto temporary = [dir] { return !filesIn(dir).filter(QStringLiteral(".update-")).isEmpty(); };
        const CleanRun clean = cleanRun(argsFor(atlas), temporary);
        if (QTest::currentTestFailed())
            return;
        int killed = 0, midWrite = 0;
        const std::vector<KillPoint> points = killPoints(clean);
        for (const KillPoint& point : points) {
            const test::FaultResult f = killAt(argsFor(atlas), point, temporary);
            killed += f.killed ? 1 : 0;
            QVERIFY2(f.killed || f.result.exitCode == 0, qPrintable(f.result.stdErr));
            // An update file left behind: the kill hit after the update had started writing.
            midWrite += temporary() ? 1 : 0;
            // Still a valid, complete atlas: the routing data are the demo's, the results group reads.
            const AtlasFile a = AtlasFile::openReadOnly(atlas.toStdString());
            QVERIFY(a.isComplete());
            QCOMPARE(a.tokens(), demo.tokens());
            const int layer = a.model().moeLayers.back();
            QCOMPARE(a.readLogits(layer), demo.readLogits(layer));
            QVERIFY2(a.readResults(group).has_value(), group); // the clean run's, or a finished rerun's
        }
        qInfo("%s: %d of %zu runs killed, %d of them while writing (clean run %lld ms, writing %lld ms)",
            qPrintable(tag), killed, points.size(), midWrite, static_cast<long long>(clean.totalMs),
            static_cast<long long>(clean.writeMs));
        const auto rerun = test::runCli(argsFor(atlas));
        QVERIFY2(rerun.exitCode == 0, qPrintable(rerun.stdErr));
        // No update file of a killed run survives the rerun (the lock file may stay).
        for (const QString& f : filesIn(QFileInfo(atlas).path()))
            QVERIFY2(f == QStringLiteral("demo.atlas.h5") || f == QStringLiteral("demo.atlas.h5.lock")
                    || f.endsWith(QStringLiteral(".csv")),
                qPrintable(f));
    }

    QStringList exportArgs(const QString& out) const
    {
        return { QStringLiteral("export"), m_model, QStringLiteral("--plan"), m_plan, QStringLiteral("--max-shard-mib"),
            QStringLiteral("1"), QStringLiteral("--force"), QStringLiteral("-o"), out };
    }

    QStringList evalArgs(const QString& atlas, const QString& csv) const
    {
        return { QStringLiteral("eval"), m_model, QStringLiteral("--atlas"), atlas, QStringLiteral("--sparsity"),
            QStringLiteral("0.5"), QStringLiteral("--criteria"), QStringLiteral("frequency"), QStringLiteral("-d"),
            QStringLiteral("arith=") + src(QStringLiteral("resources/demo/heldout/arith.txt")), QStringLiteral("-d"),
            QStringLiteral("code=") + src(QStringLiteral("resources/demo/heldout/code.txt")),
            QStringLiteral("--seq-len"), QStringLiteral("128"), QStringLiteral("--add-bos"),
            QStringLiteral("--max-samples"), QStringLiteral("2"), QStringLiteral("--threads"), QStringLiteral("1"),
            QStringLiteral("--label"), QStringLiteral("faults"), QStringLiteral("--csv"), csv };
    }

    QStringList fisherArgs(const QString& atlas) const
    {
        return { QStringLiteral("fisher"), atlas, QStringLiteral("--max-samples"), QStringLiteral("2"),
            QStringLiteral("--forms"), QStringLiteral("mask"), QStringLiteral("--ablate"), QStringLiteral("none"),
            QStringLiteral("--threads"), QStringLiteral("1"), QStringLiteral("--checkpoint"), m_model };
    }

    // A complete export: its manifest verifies and the checkpoint opens with tensors.
    static void checkExport(const QString& out)
    {
        const ManifestCheck check = verifyManifest(out.toStdString());
        QVERIFY2(check.ok(), check.ok() ? "" : check.problems.front().c_str());
        QVERIFY(check.files >= 3);
        const Checkpoint ckpt(out.toStdString());
        QVERIFY(!ckpt.names().empty());
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset (run through ctest)");
        m_model = src(QStringLiteral("resources/demo/model"));
        m_demoAtlas = src(QStringLiteral("resources/demo/demo.atlas.h5"));
        m_plan = m_dir.filePath(QStringLiteral("plan.json"));
        const auto r = test::runCli({ QStringLiteral("plan"), QStringLiteral("--atlas"), m_demoAtlas,
            QStringLiteral("--criterion"), QStringLiteral("frequency"), QStringLiteral("--generalist"),
            QStringLiteral("--keep-fraction"), QStringLiteral("0.5"), QStringLiteral("-o"), m_plan });
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
        qInfo("kill points: mt19937 seed %u, %d over the whole run and %d over the write phase per command", kSeed,
            kWholeRun, kWritePhase);
    }

    void killExport()
    {
        const auto sourceBefore = hashes(m_model.toStdString());
        const QString dir = newDir(QStringLiteral("export"));
        const QString out = dir + QStringLiteral("/pruned");
        const auto temporary = [out] { return QFileInfo::exists(out + QStringLiteral(".partial")); };
        const CleanRun clean = cleanRun(exportArgs(out), temporary);
        QVERIFY(!QTest::currentTestFailed());
        checkExport(out);
        int killed = 0, midWrite = 0;
        const std::vector<KillPoint> points = killPoints(clean);
        for (const KillPoint& point : points) {
            QDir(out).removeRecursively(); // the destination starts absent each time
            const test::FaultResult f = killAt(exportArgs(out), point, temporary);
            killed += f.killed ? 1 : 0;
            midWrite += temporary() ? 1 : 0;
            QVERIFY2(f.killed || f.result.exitCode == 0, qPrintable(f.result.stdErr));
            if (QFileInfo::exists(out))
                checkExport(out); // a killed export never leaves a half-written destination
            QVERIFY(!QTest::currentTestFailed());
        }
        qInfo("export: %d of %zu runs killed, %d of them while writing (clean run %lld ms, writing %lld ms)", killed,
            points.size(), midWrite, static_cast<long long>(clean.totalMs), static_cast<long long>(clean.writeMs));
        const auto rerun = test::runCli(exportArgs(out));
        QVERIFY2(rerun.exitCode == 0, qPrintable(rerun.stdErr));
        checkExport(out);
        QCOMPARE(filesIn(dir), QStringList { QStringLiteral("pruned") }); // no .partial left
        QCOMPARE(hashes(m_model.toStdString()), sourceBefore);
    }

    void killMerge()
    {
        const QString dir = newDir(QStringLiteral("merge"));
        const QString a = dir + QStringLiteral("/a.atlas.h5"), b = dir + QStringLiteral("/b.atlas.h5");
        QVERIFY(QFile::copy(m_demoAtlas, a) && QFile::copy(m_demoAtlas, b));
        const auto before = hashes(a.toStdString()), beforeB = hashes(b.toStdString());
        const QString out = dir + QStringLiteral("/merged.atlas.h5");
        const QStringList args = { QStringLiteral("merge"), a, b, QStringLiteral("-o"), out };
        const auto temporary = [out] { return QFileInfo::exists(out + QStringLiteral(".partial")); };
        const CleanRun clean = cleanRun(args, temporary);
        QVERIFY(!QTest::currentTestFailed());
        const int64_t tokens = AtlasFile::openReadOnly(a.toStdString()).numTokens();
        int killed = 0, midWrite = 0;
        const std::vector<KillPoint> points = killPoints(clean);
        for (const KillPoint& point : points) {
            QFile::remove(out);
            const test::FaultResult f = killAt(args, point, temporary);
            killed += f.killed ? 1 : 0;
            midWrite += temporary() ? 1 : 0;
            QVERIFY2(f.killed || f.result.exitCode == 0, qPrintable(f.result.stdErr));
            if (QFileInfo::exists(out)) {
                const AtlasFile m = AtlasFile::openReadOnly(out.toStdString());
                QVERIFY(m.isComplete());
                QCOMPARE(m.numTokens(), 2 * tokens);
            }
        }
        qInfo("merge: %d of %zu runs killed, %d of them while writing (clean run %lld ms, writing %lld ms)", killed,
            points.size(), midWrite, static_cast<long long>(clean.totalMs), static_cast<long long>(clean.writeMs));
        QFile::remove(out);
        const auto rerun = test::runCli(args);
        QVERIFY2(rerun.exitCode == 0, qPrintable(rerun.stdErr));
        QCOMPARE(AtlasFile::openReadOnly(out.toStdString()).numTokens(), 2 * tokens);
        QCOMPARE(filesIn(dir),
            (QStringList {
                QStringLiteral("a.atlas.h5"), QStringLiteral("b.atlas.h5"), QStringLiteral("merged.atlas.h5") }));
        QCOMPARE(hashes(a.toStdString()), before);
        QCOMPARE(hashes(b.toStdString()), beforeB);
    }

    void killScore()
    {
        killUpdate(
            QStringLiteral("score"),
            // --force: without it every run after the first finds the scores up to date and writes nothing.
            [](const QString& atlas) {
                return QStringList { QStringLiteral("score"), atlas, QStringLiteral("--force") };
            },
            "scores");
    }

    void killEval()
    {
        killUpdate(
            QStringLiteral("eval"),
            [this](const QString& atlas) {
                return evalArgs(atlas, QFileInfo(atlas).path() + QStringLiteral("/eval.csv"));
            },
            "evaluation/faults");
    }

    void killFisher()
    {
        killUpdate(
            QStringLiteral("fisher"), [this](const QString& atlas) { return fisherArgs(atlas); }, "fisher");
    }

    // A full disk (RLIMIT_FSIZE of 512 KiB, below every output's size): exit 1, the message names the
    // file and the cause, nothing under the final name, no partial output, the source unchanged.
    void fullDisk_data()
    {
        QTest::addColumn<QString>("command");
        QTest::newRow("export") << QStringLiteral("export");
        QTest::newRow("merge") << QStringLiteral("merge");
        QTest::newRow("score") << QStringLiteral("score");
        QTest::newRow("fisher") << QStringLiteral("fisher");
        QTest::newRow("eval --atlas") << QStringLiteral("eval");
    }

    void fullDisk()
    {
        QFETCH(QString, command);
        constexpr qint64 kLimit = 512 << 10; // below the 1 MiB shards of exportArgs and every atlas
        const QString atlas = copyDemo(QStringLiteral("full-") + command);
        const QString dir = QFileInfo(atlas).path();
        const auto before = hashes(atlas.toStdString());
        const auto modelBefore = hashes(m_model.toStdString());
        QString out, named;
        QStringList args;
        if (command == QStringLiteral("export")) {
            out = dir + QStringLiteral("/pruned");
            args = exportArgs(out);
            named = out;
        } else if (command == QStringLiteral("merge")) {
            out = dir + QStringLiteral("/merged.atlas.h5");
            args = { QStringLiteral("merge"), atlas, m_demoAtlas, QStringLiteral("-o"), out };
            named = out;
        } else if (command == QStringLiteral("eval")) {
            args = evalArgs(atlas, dir + QStringLiteral("/eval.csv"));
            named = atlas;
        } else {
            // --force: the demo atlas's scores are up to date, and score would write nothing.
            args = command == QStringLiteral("score")
                ? QStringList { QStringLiteral("score"), atlas, QStringLiteral("--force") }
                : fisherArgs(atlas);
            named = atlas;
        }
        const test::FaultResult f = test::runCliFaulty(args, -1, kLimit);
        QVERIFY2(f.result.exitCode == 1,
            qPrintable(QString::number(f.result.exitCode) + QLatin1Char(' ') + f.result.stdErr));
        QVERIFY2(f.result.stdErr.contains(named) && f.result.stdErr.contains(QStringLiteral("File too large")),
            qPrintable(f.result.stdErr));
        if (!out.isEmpty())
            QVERIFY(!QFileInfo::exists(out));
        QStringList left = filesIn(dir); // no update file, no .partial (the lock file may stay)
        left.removeAll(QStringLiteral("demo.atlas.h5.lock"));
        if (command == QStringLiteral("eval") && left.removeAll(QStringLiteral("eval.csv")) == 1) {
            // eval writes its CSV (atomically) before it stores the table in the atlas: the evaluation
            // itself succeeded, so a complete table may stay (a header and one row per variant and domain).
            QFile csv(dir + QStringLiteral("/eval.csv"));
            QVERIFY(csv.open(QIODevice::ReadOnly));
            QVERIFY(csv.readAll().count('\n') >= 3);
        }
        QCOMPARE(left, QStringList { QStringLiteral("demo.atlas.h5") });
        QCOMPARE(hashes(atlas.toStdString()), before);
        QCOMPARE(hashes(m_model.toStdString()), modelBefore);
    }
};

QTEST_GUILESS_MAIN(TstCliFaults)
#include "tst_cli_faults.moc"
