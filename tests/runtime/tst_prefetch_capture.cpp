// `capture --prefetch` (runtime/prefetch_capture.h): the next-router and quasi-hidden predictions and the default
// vectors recorded by the engine equal those transformers gives with forward hooks on tiny random models of every
// supported architecture (tests/reference/prefetch_reference.py, reading the atlas with h5py), and the recorded
// linear / mlp predictions are those of the stored estimators on transformers' normed MoE inputs; an interrupted
// and resumed capture records byte-identical /prefetch datasets; bad options are refused before anything is written.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "runtime/capture.h"
#include "runtime/executor.h"
#include "test_io.h"
#include "test_support.h"

#include <QDir>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <fstream>
#include <random>

namespace fs = std::filesystem;
using namespace moeatlas;

namespace {

constexpr int64_t kSeqLen = 24;

QString report(const test::ProcessResult& r)
{
    return QStringLiteral("exit %1\nstdout: %2\nstderr: %3").arg(r.exitCode).arg(r.stdOut, r.stdErr);
}

// A tiny random checkpoint of `arch`/`variant` (float32) made by transformers.
bool makeModel(const QString& arch, const QString& variant, const QString& dir)
{
    const auto made = test::runPython(QStringLiteral("tests/reference/make_reference.py"),
        { QStringLiteral("--arch"), arch, QStringLiteral("--variant"), variant, QStringLiteral("--experts-impl"),
            QStringLiteral("eager"), QStringLiteral("--skip-layout-check"), QStringLiteral("--out"), dir });
    if (made.exitCode != 0)
        qWarning().noquote() << report(made);
    return made.exitCode == 0;
}

// Two domains of random input_ids documents of kSeqLen tokens (5 and 3 of them): each domain has training and
// held-out sequences under the default split.
CaptureParams captureParams(const QTemporaryDir& dir, const QString& model, const QString& output)
{
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int> token(3, 255);
    CaptureParams p;
    const std::pair<const char*, int> domains[] = { { "alpha", 5 }, { "beta", 3 } };
    for (const auto& [name, docs] : domains) {
        const std::string path = dir.filePath(QString::fromLatin1(name) + QStringLiteral(".jsonl")).toStdString();
        std::ofstream out(path);
        for (int d = 0; d < docs; ++d) {
            out << "{\"input_ids\": [";
            for (int64_t t = 0; t < kSeqLen; ++t)
                out << (t ? ", " : "") << token(rng);
            out << "]}\n";
        }
        p.domains.push_back({ name, path, std::nullopt });
    }
    p.packing.seqLen = kSeqLen;
    p.packing.seed = 11;
    p.checkpoint = model.toStdString();
    p.output = output.toStdString();
    p.executor.batchTokens = 2 * kSeqLen; // several micro-batches per layer
    p.prefetch.predictors = { Predictor::NextRouter, Predictor::QuasiHidden, Predictor::Linear, Predictor::Mlp };
    return p;
}

} // namespace

class TstPrefetchCapture : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
    }

    void matchesTransformers_data()
    {
        QTest::addColumn<QString>("arch");
        QTest::addColumn<QString>("variant");
        const auto list = test::runPython(
            QStringLiteral("tests/reference/make_reference.py"), { QStringLiteral("--list-variants") });
        QVERIFY2(list.exitCode == 0, qPrintable(list.stdErr));
        for (const QString& line : list.stdOut.split(QLatin1Char('\n'), Qt::SkipEmptyParts)) {
            const QStringList parts = line.split(QLatin1Char(' '));
            QTest::addRow("%s/%s", qPrintable(parts.value(0)), qPrintable(parts.value(1)))
                << parts.value(0) << parts.value(1);
        }
    }

    // Every architecture and variant: the largest lookahead the model allows, the default budget (2k), all four
    // recorded predictors; ids identical to transformers' (near-ties excepted and counted by the script).
    void matchesTransformers()
    {
        QFETCH(QString, arch);
        QFETCH(QString, variant);
        QTemporaryDir dir;
        const QString model = dir.filePath(QStringLiteral("model"));
        QVERIFY(makeModel(arch, variant, model));
        const QString atlas = dir.filePath(QStringLiteral("run.atlas.h5"));
        const CaptureSummary s = runCapture(captureParams(dir, model, atlas), {}, nullptr);
        QCOMPARE(s.tokens, 8 * kSeqLen);
        const auto checked = test::runPython(QStringLiteral("tests/reference/prefetch_reference.py"),
            { QStringLiteral("check"), QStringLiteral("--model"), model, QStringLiteral("--atlas"), atlas });
        qInfo().noquote() << checked.stdOut.trimmed();
        QVERIFY2(checked.exitCode == 0, qPrintable(report(checked)));
    }

    void resumeIsIdentical_data()
    {
        QTest::addColumn<QString>("dtype");
        QTest::newRow("float32") << QStringLiteral("float32");
        QTest::newRow("bfloat16") << QStringLiteral("bfloat16");
    }

    // Interrupted after MoE layer 1 of 3 (so layer 2's predictions come from the resume state's held layers),
    // then resumed: the same /prefetch as one uninterrupted capture, byte for byte.
    void resumeIsIdentical()
    {
        QFETCH(QString, dtype);
        QTemporaryDir dir;
        const QString model = dir.filePath(QStringLiteral("model"));
        QVERIFY(makeModel(QStringLiteral("qwen3_moe"), QStringLiteral("gqa_norm_topk"), model));
        const QString whole = dir.filePath(QStringLiteral("whole.atlas.h5"));
        CaptureParams p = captureParams(dir, model, whole);
        p.executor.computeDtype = dtype.toStdString();
        runCapture(p, {}, nullptr);

        const QString resumed = dir.filePath(QStringLiteral("resumed.atlas.h5"));
        p.output = resumed.toStdString();
        bool stopped = false;
        const auto stopAtLastLayer = [&](const Progress& pr) {
            stopped = stopped || pr.stage == "layer 3/3";
            return !stopped;
        };
        QVERIFY_THROWS_EXCEPTION(Cancelled, runCapture(p, stopAtLastLayer, nullptr));
        QVERIFY(stopped);
        QVERIFY(QFile::exists(resumed + QStringLiteral(".partial")));
        QVERIFY(fs::exists(resumeStatePath(p.output)));
        p.resume = true;
        const CaptureSummary s = runCapture(p, {}, nullptr);
        QCOMPARE(s.layersSkipped, 2);
        const auto same = test::runPython(
            QStringLiteral("tests/reference/prefetch_reference.py"), { QStringLiteral("compare"), whole, resumed });
        qInfo().noquote() << same.stdOut.trimmed();
        QVERIFY2(same.exitCode == 0, qPrintable(report(same)));

        // Resuming with other prefetch options is refused.
        p.output = dir.filePath(QStringLiteral("other.atlas.h5")).toStdString();
        p.resume = false;
        stopped = false;
        QVERIFY_THROWS_EXCEPTION(Cancelled, runCapture(p, stopAtLastLayer, nullptr));
        p.resume = true;
        p.prefetch.budget = 3;
        QVERIFY(test::inputErrorOf([&] { runCapture(p, {}, nullptr); }).contains(QStringLiteral("budget")));
        p.prefetch.budget = 0;
        p.prefetch.predictors.clear();
        QVERIFY(test::inputErrorOf([&] { runCapture(p, {}, nullptr); }).contains(QStringLiteral("--prefetch")));
    }

    void rejectsBadOptions_data()
    {
        QTest::addColumn<int>("lookahead");
        QTest::addColumn<int>("budget");
        QTest::addColumn<double>("fraction");
        QTest::addColumn<QString>("predictor");
        QTest::addColumn<QString>("field");
        // The model: 3 MoE layers, 8 experts, top-2.
        QTest::newRow("lookahead beyond the last MoE layer") << 3 << 0 << 0.5 << QString() << "prefetchLookahead";
        QTest::newRow("negative lookahead") << -1 << 0 << 0.5 << QString() << "prefetchLookahead";
        QTest::newRow("budget below k") << 0 << 1 << 0.5 << QString() << "prefetchBudget";
        QTest::newRow("budget above E") << 0 << 9 << 0.5 << QString() << "prefetchBudget";
        QTest::newRow("train fraction 1") << 0 << 0 << 1.0 << QString() << "prefetchTrainFraction";
        QTest::newRow("train fraction 0") << 0 << 0 << 0.0 << QString() << "prefetchTrainFraction";
        QTest::newRow("frequency baseline") << 0 << 0 << 0.5 << QStringLiteral("frequency") << "prefetch";
        QTest::newRow("derived predictor") << 0 << 0 << 0.5 << QStringLiteral("oracle") << "prefetch";
    }

    // Refused with the field named, before any output exists.
    void rejectsBadOptions()
    {
        QFETCH(int, lookahead);
        QFETCH(int, budget);
        QFETCH(double, fraction);
        QFETCH(QString, predictor);
        QFETCH(QString, field);
        static QTemporaryDir dir;
        const QString model = dir.filePath(QStringLiteral("model"));
        if (!QFile::exists(model + QStringLiteral("/config.json")))
            QVERIFY(makeModel(QStringLiteral("qwen3_moe"), QStringLiteral("gqa_norm_topk"), model));
        const QString atlas = dir.filePath(QStringLiteral("bad.atlas.h5"));
        CaptureParams p = captureParams(dir, model, atlas);
        p.prefetch.maxLookahead = lookahead;
        p.prefetch.budget = budget;
        p.prefetch.trainFraction = fraction;
        if (!predictor.isEmpty())
            p.prefetch.predictors.push_back(parsePredictor(predictor.toStdString(), "prefetch"));
        const test::CaughtRequestError e = test::requestErrorOf([&] { runCapture(p, {}, nullptr); });
        qInfo("  %s: %s", e.field.c_str(), qPrintable(e.message));
        QCOMPARE(QString::fromStdString(e.field), field);
        QVERIFY(!QFile::exists(atlas));
        QVERIFY(!QFile::exists(atlas + QStringLiteral(".partial")));
        QVERIFY(!fs::exists(resumeStatePath(p.output)));
    }

    // The CLI names the flag; tuning flags without --prefetch are refused; nothing is written.
    void cliErrors()
    {
        if (!QFile::exists(test::cliExecutable()))
            QSKIP("MOEATLAS_CLI does not name the moeatlas binary");
        QTemporaryDir dir;
        const QString model = dir.filePath(QStringLiteral("model"));
        QVERIFY(makeModel(QStringLiteral("olmoe"), QStringLiteral("gqa_norm_topk"), model));
        const CaptureParams p = captureParams(dir, model, QString());
        const QString atlas = dir.filePath(QStringLiteral("cli.atlas.h5"));
        const QStringList base { QStringLiteral("capture"), model, QStringLiteral("--domain"),
            QStringLiteral("a=") + QString::fromStdString(p.domains[0].path), QStringLiteral("--seq-len"),
            QString::number(kSeqLen), QStringLiteral("-o"), atlas };
        const std::pair<QStringList, QStringList> cases[] = {
            { { QStringLiteral("--prefetch"), QStringLiteral("next-router,bogus") },
                { QStringLiteral("--prefetch"), QStringLiteral("unknown predictor 'bogus'") } },
            { { QStringLiteral("--prefetch"), QStringLiteral("--prefetch-lookahead"), QStringLiteral("2") },
                { QStringLiteral("--prefetch-lookahead"), QStringLiteral("expected 1..1") } },
            { { QStringLiteral("--prefetch-budget"), QStringLiteral("3") },
                { QStringLiteral("--prefetch-budget"), QStringLiteral("not given") } },
        };
        for (const auto& [extra, words] : cases) {
            const auto r = test::runCli(base + extra);
            QVERIFY2(r.exitCode != 0, qPrintable(report(r)));
            for (const QString& w : words)
                QVERIFY2(r.stdErr.contains(w), qPrintable(report(r)));
            QVERIFY(!QFile::exists(atlas) && !QFile::exists(atlas + QStringLiteral(".partial")));
        }
        // Given alone, --prefetch records both predictors.
        const auto ok = test::runCli(base + QStringList { QStringLiteral("--prefetch") });
        QVERIFY2(ok.exitCode == 0, qPrintable(report(ok)));
        const auto checked = test::runPython(QStringLiteral("tests/reference/prefetch_reference.py"),
            { QStringLiteral("check"), QStringLiteral("--model"), model, QStringLiteral("--atlas"), atlas });
        QVERIFY2(checked.exitCode == 0, qPrintable(report(checked)));
    }

    // The memory plan counts the held layers: at least (lookahead + 1) residual streams per recorded state.
    void memoryPlanCountsHeldLayers()
    {
        static QTemporaryDir dir;
        const QString model = dir.filePath(QStringLiteral("model"));
        QVERIFY(makeModel(QStringLiteral("qwen3_moe"), QStringLiteral("gqa_norm_topk"), model));
        const Checkpoint ckpt(model.toStdString());
        const ModelSpec spec = parseModelSpec(ckpt.config(), model.toStdString() + "/config.json");
        ExecutorOptions options;
        const Executor plain(ckpt, spec, options);
        options.prefetch.predictors = { Predictor::NextRouter, Predictor::QuasiHidden };
        options.prefetch.maxLookahead = 2;
        options.prefetch.budget = 4;
        const Executor withPrefetch(ckpt, spec, options);
        const int64_t T = 4096;
        const uint64_t extra = withPrefetch.plannedPeakBytes(T, 512) - plain.plannedPeakBytes(T, 512);
        QVERIFY(extra >= 3ull * 2 * static_cast<uint64_t>(T * spec.hiddenSize) * 4);
    }
};

QTEST_GUILESS_MAIN(TstPrefetchCapture)
#include "tst_prefetch_capture.moc"
