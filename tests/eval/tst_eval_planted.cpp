// The planted-specialisation test (PreMoE, arXiv 2505.17639): a Mixtral built by
// tests/eval/make_planted.py whose 8 "crucial" experts (2 per domain) are rare but confident
// specialists that carry the domain's predictable tokens, and whose 8 "fillers" sit in many top-2
// pools with low confidence and contribute nothing. Through the CLI, as a user runs it (capture ->
// score -> eval --sparsity 0.5), a PEU specialist must keep its domain's held-out loss at the full
// model's while the frequency specialist and random plans lose it. Our masked evaluation is also
// checked against transformers' losses for the full model and with each domain's crucial experts
// masked (make_planted.py --check), and the table stored in the atlas against the CSV.
#include "atlas/atlas_file.h"
#include "test_io.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

using namespace moeatlas;

namespace {

struct CsvRow {
    std::string variant, method, criterion, target, domain;
    double sparsity = 0, nll = 0;
};

std::vector<CsvRow> readCsv(const QString& path)
{
    std::ifstream in(path.toStdString());
    std::vector<CsvRow> rows;
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line)) {
        std::vector<std::string> f;
        std::stringstream s(line);
        for (std::string cell; std::getline(s, cell, ',');)
            f.push_back(cell);
        if (f.size() < 9)
            continue;
        rows.push_back({ f[0], f[1], f[2], f[3], f[6], std::stod(f[4]), std::stod(f[8]) });
    }
    return rows;
}

} // namespace

class TstEvalPlanted : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    nlohmann::json m_reference; // make_planted.py --check
    nlohmann::json m_planted; // planted.json
    std::vector<std::string> m_domains;

    QString path(const QString& name) const { return m_dir.filePath(name); }
    QStringList domainArgs(const QString& set) const
    {
        QStringList args;
        for (const std::string& d : m_domains)
            args << QStringLiteral("-d")
                 << QString::fromStdString(d) + QLatin1Char('=') + path(set + QLatin1Char('/'))
                    + QString::fromStdString(d) + QStringLiteral(".jsonl");
        return args;
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
        const auto made = test::runPython(QStringLiteral("tests/eval/make_planted.py"),
            { QStringLiteral("--out"), m_dir.path(), QStringLiteral("--check") });
        QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr + made.stdOut));
        m_reference = nlohmann::json::parse(made.stdOut.trimmed().split(QLatin1Char('\n')).last().toStdString());
        std::ifstream in(path(QStringLiteral("planted.json")).toStdString());
        m_planted = nlohmann::json::parse(in);
        m_domains = m_planted["domains"].get<std::vector<std::string>>();

        QStringList capture = { QStringLiteral("capture"), path(QStringLiteral("model")), QStringLiteral("--seq-len"),
            QStringLiteral("64"), QStringLiteral("-o"), path(QStringLiteral("run.atlas.h5")) };
        QCOMPARE(test::runCli(capture + domainArgs(QStringLiteral("calib"))).exitCode, 0);
        QCOMPARE(test::runCli({ QStringLiteral("score"), path(QStringLiteral("run.atlas.h5")) }).exitCode, 0);
    }

    // Full model and "own crucial experts dropped" plans: our masked loss equals transformers'.
    void maskedLossEqualsTransformers()
    {
        QStringList args = { QStringLiteral("eval"), path(QStringLiteral("model")), QStringLiteral("--seq-len"),
            QStringLiteral("64"), QStringLiteral("--csv"), path(QStringLiteral("nocrucial.csv")) };
        for (const std::string& d : m_domains) {
            std::vector<int> keep;
            const auto crucial = m_planted["crucial"][d].get<std::vector<int>>();
            for (int e = 0; e < 16; ++e)
                if (std::find(crucial.begin(), crucial.end(), e) == crucial.end())
                    keep.push_back(e);
            const nlohmann::json plan = { { "format", "moeatlas-plan" }, { "version", 1 },
                { "source", { { "num_experts", 16 }, { "top_k", 2 } } },
                { "derivation", { { "method", "plan" }, { "criterion", "planted" } } },
                { "layers", { { { "layer", 0 }, { "keep", keep } }, { { "layer", 1 }, { "keep", keep } } } } };
            const QString file
                = path(QStringLiteral("nocrucial-") + QString::fromStdString(d) + QStringLiteral(".json"));
            std::ofstream(file.toStdString()) << plan.dump();
            args << QStringLiteral("--plan") << file;
        }
        QCOMPARE(test::runCli(args + domainArgs(QStringLiteral("heldout"))).exitCode, 0);
        std::map<std::pair<std::string, std::string>, double> nll;
        for (const CsvRow& r : readCsv(path(QStringLiteral("nocrucial.csv"))))
            nll[{ r.variant, r.domain }] = r.nll;
        // Our engine vs transformers in float32: the losses differ by the order of fp32 sums, an error of
        // the order of the largest |logit| times the rounding (19.5 here: after a hard token the successor's
        // logit, all others 0), so within kReorderRtol of it (test_io.h); far below the >= 0.5 nats the
        // crucial experts are worth.
        const double scale = m_reference["max_abs_logit"].get<double>();
        QVERIFY(scale > 0);
        for (const std::string& d : m_domains) {
            const double full = nll.at({ "full", d }), masked = nll.at({ "nocrucial-" + d + ".json", d });
            const double refFull = m_reference["domains"][d]["nll_full"].get<double>();
            const double refMasked = m_reference["domains"][d]["nll_no_crucial"].get<double>();
            qInfo("%s: full %.6f (transformers %.6f), crucial dropped %.6f (transformers %.6f)", d.c_str(), full,
                refFull, masked, refMasked);
            QVERIFY(std::abs(full - refFull) <= test::kReorderRtol * scale);
            QVERIFY(std::abs(masked - refMasked) <= test::kReorderRtol * scale);
            QVERIFY(masked - full >= 0.5);
        }
    }

    void peuSpecialistBeatsFrequencyAndRandom()
    {
        const QString csv = path(QStringLiteral("sweep.csv"));
        const QString atlas = path(QStringLiteral("run.atlas.h5"));
        QStringList args = { QStringLiteral("eval"), QStringLiteral("--atlas"), atlas, QStringLiteral("--sparsity"),
            QStringLiteral("0.5"), QStringLiteral("--criteria"), QStringLiteral("peu,frequency"),
            QStringLiteral("--random-plans"), QStringLiteral("8"), QStringLiteral("--seq-len"), QStringLiteral("64"),
            QStringLiteral("--csv"), csv, QStringLiteral("--label"), QStringLiteral("planted") };
        const test::ProcessResult r = test::runCli(args + domainArgs(QStringLiteral("heldout")));
        QCOMPARE(r.exitCode, 0);
        qInfo("%s", qPrintable(r.stdOut));
        const std::vector<CsvRow> rows = readCsv(csv);
        std::map<std::pair<std::string, std::string>, double> nll;
        for (const CsvRow& row : rows)
            nll[{ row.variant, row.domain }] = row.nll;
        for (const std::string& d : m_domains) {
            const double full = nll.at({ "full", d });
            const double peu = nll.at({ "specialist:" + d + "/peu@0.50", d });
            const double freq = nll.at({ "specialist:" + d + "/frequency@0.50", d });
            double randomSum = 0, randomMin = INFINITY;
            for (int i = 0; i < 8; ++i) {
                const double v = nll.at({ "random#" + std::to_string(i) + "@0.50", d });
                randomSum += v;
                randomMin = std::min(randomMin, v);
            }
            const double randomMean = randomSum / 8;
            qInfo("%s at 50%% sparsity, held-out nll: full %.4f, PEU specialist %.4f (%+.4f), frequency specialist "
                  "%.4f (%+.4f), random mean of 8 %.4f (%+.4f), best random %.4f",
                d.c_str(), full, peu, peu - full, freq, freq - full, randomMean, randomMean - full, randomMin);
            QVERIFY(peu - full <= 0.01);
            QVERIFY(freq - peu >= 0.5);
            QVERIFY(randomMean - peu >= 0.3);
            QVERIFY(randomMin - peu >= -0.01); // a lucky random plan can keep both crucial experts
        }

        // The table is in the atlas too, the same numbers as the CSV.
        const AtlasFile a = AtlasFile::openReadOnly(atlas.toStdString());
        const auto stored = a.readResults("evaluation/planted");
        QVERIFY(stored.has_value());
        const auto params = nlohmann::json::parse(stored->paramsJson);
        const AtlasArray* table = stored->find("nll");
        QVERIFY(table != nullptr);
        const std::size_t D = params["domains"].size();
        QCOMPARE(table->dims, (std::vector<uint64_t> { params["variants"].size(), D }));
        QCOMPARE(rows.size(), params["variants"].size() * D);
        for (std::size_t v = 0; v < params["variants"].size(); ++v)
            for (std::size_t d = 0; d < D; ++d) {
                const double csvValue = nll.at(
                    { params["variants"][v]["name"].get<std::string>(), params["domains"][d].get<std::string>() });
                // The CSV prints 9 significant digits (relative rounding <= 5e-9) of the stored doubles.
                QVERIFY(std::abs(table->values[v * D + d] - csvValue) <= 1e-6 * std::max(1.0, csvValue));
            }
    }
};

QTEST_GUILESS_MAIN(TstEvalPlanted)
#include "tst_eval_planted.moc"
