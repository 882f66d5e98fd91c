// `moeatlas capture` from text: four text domains (plain text blocks, a directory of .txt files,
// JSONL with a text field, JSONL messages) tokenized with the checkpoint's tokenizer.json give the
// same atlas — tokens, domains, router logits and decisions — as the capture of the equivalent
// input_ids made by HF `tokenizers` (tests/cli/make_text_fixture.py); and the token ids are HF's.
#include "atlas/atlas_file.h"
#include "test_support.h"

#include <QDir>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <set>

using namespace moeatlas;

namespace {

const QStringList kDomains
    = { QStringLiteral("prose"), QStringLiteral("code"), QStringLiteral("notes"), QStringLiteral("chat") };
constexpr int32_t kBos = 1;

QString report(const test::ProcessResult& r)
{
    return QStringLiteral("exit %1\nstdout: %2\nstderr: %3").arg(r.exitCode).arg(r.stdOut, r.stdErr);
}

// HF's documents of one domain, in reader order, from <domain>.ids.jsonl.
std::vector<std::vector<int32_t>> hfDocuments(const QString& path)
{
    std::ifstream in(path.toStdString());
    std::vector<std::vector<int32_t>> docs;
    std::string line;
    while (std::getline(in, line))
        if (!line.empty())
            docs.push_back(nlohmann::json::parse(line).at("input_ids").get<std::vector<int32_t>>());
    return docs;
}

} // namespace

class TstCaptureText : public QObject {
    Q_OBJECT

private:
    QTemporaryDir m_dir;
    QString m_model;
    QString m_data;

    QString data(const QString& name) const { return QDir(m_data).filePath(name); }

    // capture arguments shared by both runs (same seed, seq-len, caps).
    QStringList common(const QString& output) const
    {
        return { QStringLiteral("capture"), m_model, QStringLiteral("--seq-len"), QStringLiteral("32"),
            QStringLiteral("--seed"), QStringLiteral("7"), QStringLiteral("--batch-tokens"), QStringLiteral("256"),
            QStringLiteral("--output"), output };
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QVERIFY2(QFile::exists(test::cliExecutable()), "MOEATLAS_CLI does not name the moeatlas binary");
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset (reference venv)");
        m_model = m_dir.filePath(QStringLiteral("model"));
        m_data = m_dir.filePath(QStringLiteral("data"));
        const auto made = test::runPython(QStringLiteral("tests/reference/make_reference.py"),
            { QStringLiteral("--arch"), QStringLiteral("qwen3_moe"), QStringLiteral("--variant"),
                QStringLiteral("gqa_norm_topk"), QStringLiteral("--dtype"), QStringLiteral("float32"),
                QStringLiteral("--skip-layout-check"), QStringLiteral("--out"), m_model });
        QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr));
        const auto fixture = test::runPython(QStringLiteral("tests/cli/make_text_fixture.py"),
            { QStringLiteral("--checkpoint"), m_model, QStringLiteral("--out"), m_data });
        QVERIFY2(fixture.exitCode == 0, qPrintable(fixture.stdErr));
    }

    void textEqualsInputIds()
    {
        const QString textAtlas = m_dir.filePath(QStringLiteral("text.atlas.h5"));
        const QString idsAtlas = m_dir.filePath(QStringLiteral("ids.atlas.h5"));
        // From text: the tokenizer is <checkpoint>/tokenizer.json, BOS is its bos_token (id 1).
        const auto fromText = test::runCli(common(textAtlas)
            + QStringList { QStringLiteral("--domain"), QStringLiteral("prose=") + data(QStringLiteral("prose.txt")),
                QStringLiteral("--domain"), QStringLiteral("code=") + data(QStringLiteral("code")),
                QStringLiteral("--domain"), QStringLiteral("notes=") + data(QStringLiteral("notes.jsonl")),
                QStringLiteral("--domain"),
                QStringLiteral("chat=") + data(QStringLiteral("chat.jsonl")) + QStringLiteral(":6"),
                QStringLiteral("--text-field"), QStringLiteral("body"), QStringLiteral("--add-bos") });
        QVERIFY2(fromText.exitCode == 0, qPrintable(report(fromText)));
        // From HF's input_ids with the same BOS given by id.
        QStringList idsArgs = common(idsAtlas) + QStringList { QStringLiteral("--bos"), QString::number(kBos) };
        for (const QString& d : kDomains)
            idsArgs << QStringLiteral("--domain")
                    << d + QLatin1Char('=') + data(d + QStringLiteral(".ids.jsonl"))
                    + (d == QLatin1String("chat") ? QStringLiteral(":6") : QString());
        const auto fromIds = test::runCli(idsArgs);
        QVERIFY2(fromIds.exitCode == 0, qPrintable(report(fromIds)));

        // Exact: two runs of this binary on this machine with the same options (LibTorch's default thread
        // count in both) on the same tokens: the same operations on the same shapes in the same order.
        const AtlasFile text = AtlasFile::openReadOnly(textAtlas.toStdString());
        const AtlasFile ids = AtlasFile::openReadOnly(idsAtlas.toStdString());
        QVERIFY(text.isComplete() && ids.isComplete());
        QCOMPARE(text.tokens(), ids.tokens());
        QCOMPARE(text.domainIds(), ids.domainIds());
        QCOMPARE(text.seqOffsets(), ids.seqOffsets());
        QVERIFY(!text.model().moeLayers.empty());
        for (int l : text.model().moeLayers) {
            QCOMPARE(text.readLogits(l), ids.readLogits(l));
            QCOMPARE(text.readTopkIds(l), ids.readTopkIds(l));
            QCOMPARE(text.readTopkWeights(l), ids.readTopkWeights(l));
        }

        // Provenance: the formats and the tokenizer.
        const auto& calib = text.calibration();
        QCOMPARE(calib.domains.size(), std::size_t(4));
        const std::vector<std::string> formats { "text", "text", "text-jsonl:body", "messages-jsonl" };
        for (std::size_t d = 0; d < 4; ++d) {
            QCOMPARE(calib.domains[d].name, kDomains[static_cast<qsizetype>(d)].toStdString());
            QCOMPARE(calib.domains[d].format, formats[d]);
            QCOMPARE(ids.calibration().domains[d].format, std::string("input_ids-jsonl"));
            QVERIFY(calib.domains[d].numSamples > 0);
        }
        QCOMPARE(calib.domains[3].numSamples, int64_t(6)); // the :6 cap
        const std::string tokenizerPath = QDir(m_model).filePath(QStringLiteral("tokenizer.json")).toStdString();
        for (const char* fragment : { "with BOS 1 before each document", "without its special-token template",
                 "one document per blank-line-separated block", "one document per .txt file", "string field \"body\"",
                 "\"<role>: <content>\" lines", "(sha256 " })
            QVERIFY2(calib.packing.find(fragment) != std::string::npos, calib.packing.c_str());
        QVERIFY2(calib.packing.find(tokenizerPath) != std::string::npos, calib.packing.c_str());
        QVERIFY(ids.calibration().packing.find("tokenizer") == std::string::npos);

        // The ids are HF's, independently of the packer: every whole document of the text atlas
        // (between two BOS of one domain) is one of HF's encodings of that domain's documents.
        const std::vector<int32_t> tokens = text.tokens();
        const std::vector<int16_t> domains = text.domainIds();
        for (int d = 0; d < 4; ++d) {
            const auto hf = hfDocuments(data(kDomains[d] + QStringLiteral(".ids.jsonl")));
            const std::set<std::vector<int32_t>> known(hf.begin(), hf.end());
            std::vector<int32_t> stream;
            for (std::size_t t = 0; t < tokens.size(); ++t)
                if (domains[t] == d)
                    stream.push_back(tokens[t]);
            QVERIFY(!stream.empty() && stream.front() == kBos);
            int whole = 0;
            std::size_t start = 0;
            for (std::size_t t = 1; t <= stream.size(); ++t) {
                if (t < stream.size() && stream[t] != kBos)
                    continue;
                if (t < stream.size()) { // the last piece may be cut by the last sequence
                    const std::vector<int32_t> doc(stream.begin() + static_cast<std::ptrdiff_t>(start) + 1,
                        stream.begin() + static_cast<std::ptrdiff_t>(t));
                    QVERIFY2(known.count(doc),
                        qPrintable(kDomains[d] + QStringLiteral(": a document not encoded as HF does")));
                    ++whole;
                }
                start = t;
            }
            QVERIFY2(whole >= 2, qPrintable(kDomains[d]));
        }
    }

    void textNeedsTokenizer()
    {
        const QString out = m_dir.filePath(QStringLiteral("err.atlas.h5"));
        const QStringList prose
            = { QStringLiteral("--domain"), QStringLiteral("prose=") + data(QStringLiteral("prose.txt")) };
        const auto missing = test::runCli(common(out) + prose
            + QStringList { QStringLiteral("--tokenizer"), m_dir.filePath(QStringLiteral("none.json")) });
        QVERIFY2(missing.exitCode != 0 && missing.stdErr.contains(QStringLiteral("--tokenizer"))
                && missing.stdErr.contains(QStringLiteral("none.json")),
            qPrintable(report(missing)));
        QVERIFY(!QFile::exists(out));

        // No tokenizer.json in the checkpoint and no --tokenizer: a text domain is refused...
        const QString tok = QDir(m_model).filePath(QStringLiteral("tokenizer.json"));
        const QString moved = m_dir.filePath(QStringLiteral("moved-tokenizer.json"));
        QVERIFY(QFile::rename(tok, moved));
        const auto none = test::runCli(common(out) + prose);
        const auto explicitPath = test::runCli(common(m_dir.filePath(QStringLiteral("explicit.atlas.h5"))) + prose
            + QStringList { QStringLiteral("--tokenizer"), moved });
        const auto idsOnly = test::runCli(common(m_dir.filePath(QStringLiteral("ids-only.atlas.h5")))
            + QStringList {
                QStringLiteral("--domain"), QStringLiteral("prose=") + data(QStringLiteral("prose.ids.jsonl")) });
        QVERIFY(QFile::rename(moved, tok));
        QVERIFY2(none.exitCode != 0 && none.stdErr.contains(QStringLiteral("needs a tokenizer"))
                && none.stdErr.contains(QStringLiteral("--tokenizer PATH")) && none.stdErr.contains(tok),
            qPrintable(report(none)));
        // ... while --tokenizer PATH works, and input_ids need none.
        QVERIFY2(explicitPath.exitCode == 0, qPrintable(report(explicitPath)));
        QVERIFY2(idsOnly.exitCode == 0, qPrintable(report(idsOnly)));
    }
};

QTEST_GUILESS_MAIN(TstCaptureText)
#include "tst_capture_text.moc"
