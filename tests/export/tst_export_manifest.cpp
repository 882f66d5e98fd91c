// The SHA-256 manifest of exports (docs/user-guide.md, "Verifying an export") and
// `moeatlas inspect --verify`:
// - the model card lists every other file of the export, with sizes and SHA-256 equal to Qt's
//   (QCryptographicHash, an implementation independent of core/util/sha256) — sharded, with the
//   index, and with modeling_moeatlas.py;
// - a clean export verifies (exit 0); one flipped byte, a truncated file, a missing file and an extra
//   file are each reported naming the file (exit 1); a card without manifest is an error.
#include "checkpoint/checkpoint_manifest.h"
#include "test_support.h"

#include <QCryptographicHash>
#include <QDir>
#include <QDirIterator>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <map>

using namespace moeatlas;

namespace {

QString sha256Qt(const QString& path)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly))
        return {};
    QCryptographicHash h(QCryptographicHash::Sha256);
    h.addData(&f);
    return QString::fromLatin1(h.result().toHex());
}

// Every file under `dir` but README.md, by '/'-separated relative name.
QStringList filesBut(const QString& dir, const QString& card)
{
    QStringList names;
    QDirIterator it(dir, QDir::Files | QDir::Hidden, QDirIterator::Subdirectories);
    while (it.hasNext()) {
        const QString name = QDir(dir).relativeFilePath(it.next());
        if (name != card)
            names.push_back(name);
    }
    names.sort();
    return names;
}

bool flipByte(const QString& path, qint64 at)
{
    QFile f(path);
    if (!f.open(QIODevice::ReadWrite) || !f.seek(at))
        return false;
    char c = 0;
    f.getChar(&c);
    f.seek(at);
    return f.putChar(static_cast<char>(c ^ 0x01));
}

} // namespace

class TstExportManifest : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    QString m_plan;
    int m_count = 0;

    // A fresh export of the demo model (1 MiB shards: several shards and an index) with `extra` flags.
    QString exportDemo(const QStringList& extra = {})
    {
        const QString out = m_dir.filePath(QStringLiteral("export%1").arg(++m_count));
        const auto r = test::runCli(
            QStringList { QStringLiteral("export"), test::sourcePath(QStringLiteral("resources/demo/model")),
                QStringLiteral("--plan"), m_plan, QStringLiteral("--max-shard-mib"), QStringLiteral("1"),
                QStringLiteral("-o"), out }
            + extra);
        return r.exitCode == 0 ? out : QString();
    }

    static test::ProcessResult verify(const QString& dir)
    {
        return test::runProcess(test::cliExecutable(), { QStringLiteral("inspect"), QStringLiteral("--verify"), dir });
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset (run through ctest)");
        m_plan = m_dir.filePath(QStringLiteral("plan.json"));
        const auto r = test::runCli({ QStringLiteral("plan"), QStringLiteral("--atlas"),
            test::sourcePath(QStringLiteral("resources/demo/demo.atlas.h5")), QStringLiteral("--criterion"),
            QStringLiteral("frequency"), QStringLiteral("--generalist"), QStringLiteral("--keep-fraction"),
            QStringLiteral("0.5"), QStringLiteral("-o"), m_plan });
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    }

    // The manifest lists exactly the other files, with Qt's sizes and hashes.
    void manifestListsEveryFile_data()
    {
        QTest::addColumn<QStringList>("extra");
        QTest::addColumn<QString>("mustList");
        QTest::newRow("stock, sharded") << QStringList {} << QStringLiteral("model.safetensors.index.json");
        QTest::newRow("dynamic routing") << QStringList { QStringLiteral("--routing"), QStringLiteral("top-p:0.7") }
                                         << QStringLiteral("modeling_moeatlas.py");
    }

    void manifestListsEveryFile()
    {
        QFETCH(QStringList, extra);
        QFETCH(QString, mustList);
        const QString out = exportDemo(extra);
        QVERIFY(!out.isEmpty());
        QFile card(out + QStringLiteral("/README.md"));
        QVERIFY(card.open(QIODevice::ReadOnly));
        const std::optional<std::vector<ManifestEntry>> listed
            = parseManifest(card.readAll().toStdString(), "README.md");
        QVERIFY(listed.has_value());
        QStringList names;
        for (const ManifestEntry& e : *listed) {
            const QString name = QString::fromStdString(e.name);
            names.push_back(name);
            QCOMPARE(static_cast<qint64>(e.bytes), QFileInfo(out + QLatin1Char('/') + name).size());
            QCOMPARE(QString::fromStdString(e.sha256), sha256Qt(out + QLatin1Char('/') + name));
        }
        QCOMPARE(names, filesBut(out, QStringLiteral("README.md")));
        QVERIFY(names.contains(mustList));
        QVERIFY(names.contains(QStringLiteral("config.json")));
        QVERIFY(names.filter(QStringLiteral(".safetensors")).size() >= 3);

        const auto r = verify(out);
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
        QVERIFY2(r.stdOut.startsWith(QStringLiteral("ok: %1 files").arg(names.size())), qPrintable(r.stdOut));
    }

    // Each kind of damage is reported naming the file; exit 1.
    void verifyNamesTheDamagedFile_data()
    {
        QTest::addColumn<QString>("damage");
        QTest::addColumn<QString>("expected");
        QTest::newRow("flipped byte") << QStringLiteral("flip") << QStringLiteral("differs from the manifest");
        QTest::newRow("truncated") << QStringLiteral("truncate") << QStringLiteral("bytes, the manifest says");
        QTest::newRow("missing") << QStringLiteral("remove") << QStringLiteral("missing");
        QTest::newRow("extra file") << QStringLiteral("add") << QStringLiteral("not listed");
        QTest::newRow("config edited") << QStringLiteral("config") << QStringLiteral("differs from the manifest");
    }

    void verifyNamesTheDamagedFile()
    {
        QFETCH(QString, damage);
        QFETCH(QString, expected);
        const QString out = exportDemo();
        QVERIFY(!out.isEmpty());
        const QStringList shards = QDir(out).entryList({ QStringLiteral("*.safetensors") }, QDir::Files, QDir::Name);
        QVERIFY(shards.size() >= 2);
        QString file = out + QLatin1Char('/') + shards[1];
        if (damage == QStringLiteral("flip")) {
            QVERIFY(flipByte(file, QFileInfo(file).size() / 2));
        } else if (damage == QStringLiteral("truncate")) {
            QVERIFY(QFile::resize(file, QFileInfo(file).size() - 1));
        } else if (damage == QStringLiteral("remove")) {
            QVERIFY(QFile::remove(file));
        } else if (damage == QStringLiteral("add")) {
            file = out + QStringLiteral("/notes.txt");
            QFile f(file);
            QVERIFY(f.open(QIODevice::WriteOnly) && f.write("x") == 1);
        } else {
            file = out + QStringLiteral("/config.json"); // same size, one bit different
            QVERIFY(flipByte(file, QFileInfo(file).size() / 2));
        }
        const auto r = verify(out);
        QCOMPARE(r.exitCode, 1);
        QVERIFY2(r.stdErr.contains(file) && r.stdErr.contains(expected), qPrintable(r.stdErr));
    }

    // A card without manifest (an older export, or a hand-made checkpoint) cannot be verified.
    void cardWithoutManifestIsAnError()
    {
        const QString out = exportDemo();
        QVERIFY(!out.isEmpty());
        QFile card(out + QStringLiteral("/README.md"));
        QVERIFY(card.open(QIODevice::ReadOnly));
        QByteArray text = card.readAll();
        card.close();
        text.truncate(text.indexOf("\n## Files"));
        QVERIFY(card.open(QIODevice::WriteOnly | QIODevice::Truncate) && card.write(text) == text.size());
        card.close();
        const auto r = verify(out);
        QCOMPARE(r.exitCode, 1);
        QVERIFY2(r.stdErr.contains(out + QStringLiteral("/README.md")) && r.stdErr.contains(QStringLiteral("manifest")),
            qPrintable(r.stdErr));
        QVERIFY(QFile::remove(out + QStringLiteral("/README.md")));
        QCOMPARE(verify(out).exitCode, 1);
    }
};

QTEST_GUILESS_MAIN(TstExportManifest)
#include "tst_export_manifest.moc"
