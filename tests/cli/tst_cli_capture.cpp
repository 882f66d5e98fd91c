// `moeatlas capture` end to end: what lands in the atlas equals transformers' router logits;
// Ctrl-C and kill leave a valid partial atlas that --resume completes to the same numbers as an
// uninterrupted run; and the layer-streaming executor runs models several times its peak memory.
#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/safetensors.h"
#include "test_io.h"
#include "test_support.h"
#include "test_tensors.h"
#include "util/sha256.h"

#include <QDir>
#include <QFile>
#include <QProcess>
#include <QRegularExpression>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>

using namespace moeatlas;
namespace fs = std::filesystem;

namespace {

QString cli()
{
    return test::cliExecutable();
}

// Generates a random model with the project's generator; returns its directory.
QString generateModel(const QTemporaryDir& dir, const QString& name, const QStringList& shape)
{
    const QString path = dir.filePath(name);
    const auto r = test::runCli(QStringList { QStringLiteral("generate"), QStringLiteral("-o"), path } + shape);
    if (r.exitCode != 0)
        qWarning("%s", qPrintable(r.stdErr));
    return r.exitCode == 0 ? path : QString();
}

QString generateCalibration(const QTemporaryDir& dir, const QString& name, int docs, int docTokens, int seed)
{
    const QString path = dir.filePath(name);
    const auto r = test::runCli(
        { QStringLiteral("generate"), QStringLiteral("--vocab"), QStringLiteral("512"), QStringLiteral("--seed"),
            QString::number(seed), QStringLiteral("--calibration"), path, QStringLiteral("--calibration-docs"),
            QString::number(docs), QStringLiteral("--calibration-doc-tokens"), QString::number(docTokens) });
    return r.exitCode == 0 ? path : QString();
}

// A model and calibration sized so that a capture lasts a few seconds and spans 6 layers.
const QStringList kInterruptModel
    = { QStringLiteral("--arch"), QStringLiteral("mixtral"), QStringLiteral("--layers"), QStringLiteral("6"),
          QStringLiteral("--hidden"), QStringLiteral("256"), QStringLiteral("--heads"), QStringLiteral("4"),
          QStringLiteral("--kv-heads"), QStringLiteral("2"), QStringLiteral("--head-dim"), QStringLiteral("64"),
          QStringLiteral("--experts"), QStringLiteral("16"), QStringLiteral("--top-k"), QStringLiteral("2"),
          QStringLiteral("--expert-width"), QStringLiteral("512"), QStringLiteral("--vocab"), QStringLiteral("512") };

// Exact comparison of two captures made by this binary on this machine with the same arguments
// (--threads 1, the same --batch-tokens): the same operations on the same shapes in the same order.
void compareAtlases(const QString& a, const QString& b)
{
    const AtlasFile x = AtlasFile::openReadOnly(a.toStdString());
    const AtlasFile y = AtlasFile::openReadOnly(b.toStdString());
    QVERIFY(x.isComplete());
    QVERIFY(y.isComplete());
    QCOMPARE(x.tokens(), y.tokens());
    QCOMPARE(x.completedLayers(), y.completedLayers());
    for (int l : x.model().moeLayers) {
        QCOMPARE(x.readLogits(l), y.readLogits(l));
        QCOMPARE(x.readTopkIds(l), y.readTopkIds(l));
        QCOMPARE(x.readTopkWeights(l), y.readTopkWeights(l));
    }
}

} // namespace

class TestCliCapture : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY2(QFile::exists(cli()), "MOEATLAS_CLI does not name the moeatlas binary");
        QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset (reference venv)");
    }

    // The atlas written by the CLI holds transformers' router logits (up to the order of fp32 sums:
    // within kReorderRtol of their largest magnitude, test_io.h) and decisions, with the tokens, domains
    // and provenance it claims.
    void atlasMatchesTransformers_data()
    {
        QTest::addColumn<QString>("logitsDtype");
        QTest::addColumn<double>("storageRounding"); // relative rounding of the stored values
        QTest::addColumn<QString>("arch");
        QTest::addColumn<QString>("variant");
        QTest::addColumn<QString>("modelType");
        const QString qwen2 = QStringLiteral("qwen2_moe"), shared = QStringLiteral("shared_mlp_only");
        QTest::newRow("float32") << QStringLiteral("float32") << 0.0 << qwen2 << shared << qwen2;
        // fp16 storage: relative rounding <= 2^-11 (half an ulp of a 10-bit mantissa).
        QTest::newRow("float16") << QStringLiteral("float16") << 1.0 / 2048.0 << qwen2 << shared << qwen2;
        // Hybrid Gated DeltaNet / full-attention layers, sequences longer than one delta-rule chunk.
        QTest::newRow("qwen3_5_moe/float32") << QStringLiteral("float32") << 0.0 << QStringLiteral("qwen3_5_moe")
                                             << QStringLiteral("hybrid_chunks") << QStringLiteral("qwen3_5_moe_text");
        // gpt_oss: router bias in the stored logits, sinks and sliding layers on the way there.
        QTest::newRow("gpt_oss/float32") << QStringLiteral("float32") << 0.0 << QStringLiteral("gpt_oss")
                                         << QStringLiteral("swa_sinks_yarn") << QStringLiteral("gpt_oss");
        // deepseek_v3: MLA with q-LoRA and YaRN, the group-limited sigmoid router (raw pre-sigmoid logits stored).
        QTest::newRow("deepseek_v3/float32") << QStringLiteral("float32") << 0.0 << QStringLiteral("deepseek_v3")
                                             << QStringLiteral("qlora_yarn_groups2") << QStringLiteral("deepseek_v3");
    }

    void atlasMatchesTransformers()
    {
        QFETCH(QString, logitsDtype);
        QFETCH(double, storageRounding);
        QFETCH(QString, arch);
        QFETCH(QString, variant);
        QFETCH(QString, modelType);
        QTemporaryDir dir;
        const QString model = dir.filePath(QStringLiteral("model"));
        const auto made = test::runPython(QStringLiteral("tests/reference/make_reference.py"),
            { QStringLiteral("--arch"), arch, QStringLiteral("--variant"), variant,
                QStringLiteral("--skip-layout-check"), QStringLiteral("--out"), model });
        QVERIFY2(made.exitCode == 0, qPrintable(made.stdErr));
        const SafetensorsFile ref(QString(model + QStringLiteral("/reference.safetensors")).toStdString());
        const std::vector<int64_t> ids = test::tensorValues<int64_t>(ref, "input_ids");
        const int64_t B = ref.info("input_ids").shape[0], S = ref.info("input_ids").shape[1];
        // Two domains: the first sequence alone, then the others.
        const QString calA = dir.filePath(QStringLiteral("a.jsonl")), calB = dir.filePath(QStringLiteral("b.jsonl"));
        for (int64_t b = 0; b < B; ++b) {
            std::ofstream out((b == 0 ? calA : calB).toStdString(), std::ios::app);
            out << "{\"input_ids\": [";
            for (int64_t t = 0; t < S; ++t)
                out << (t ? ", " : "") << ids[static_cast<std::size_t>(b * S + t)];
            out << "]}\n";
        }
        const QString atlasPath = dir.filePath(QStringLiteral("run.atlas.h5"));
        const auto cap = test::runCli(
            { QStringLiteral("capture"), model, QStringLiteral("--domain"), QStringLiteral("first=") + calA,
                QStringLiteral("--domain"), QStringLiteral("rest=") + calB, QStringLiteral("--seq-len"),
                QString::number(S), QStringLiteral("--logits-dtype"), logitsDtype, QStringLiteral("--expert-norms"),
                QStringLiteral("--hidden-samples"), QStringLiteral("7"), QStringLiteral("-o"), atlasPath });
        QVERIFY2(cap.exitCode == 0, qPrintable(cap.stdErr));
        QVERIFY(!QFile::exists(atlasPath + QStringLiteral(".partial")));

        const AtlasFile atlas = AtlasFile::openReadOnly(atlasPath.toStdString());
        QVERIFY(atlas.isComplete());
        QCOMPARE(atlas.model().modelType, modelType.toStdString());
        QCOMPARE(atlas.model().configSha256, sha256File(QString(model + QStringLiteral("/config.json")).toStdString()));
        QCOMPARE(atlas.calibration().domains.size(), std::size_t(2));
        QCOMPARE(atlas.calibration().domains[0].numSamples, int64_t(1));
        QCOMPARE(atlas.calibration().domains[1].numSamples, B - 1);
        QCOMPARE(atlas.calibration().seqLen, S);
        const std::vector<int32_t> tokens = atlas.tokens();
        const std::vector<int16_t> domains = atlas.domainIds();
        QCOMPARE(static_cast<int64_t>(tokens.size()), B * S);
        // Packing may reorder sequences within a domain: map each atlas sequence to its reference row.
        std::vector<int64_t> rowOf(static_cast<std::size_t>(B), -1);
        for (int64_t s = 0; s < B; ++s)
            for (int64_t r = 0; r < B; ++r)
                if (std::equal(tokens.begin() + s * S, tokens.begin() + (s + 1) * S, ids.begin() + r * S,
                        [](int32_t a, int64_t b) { return a == b; }))
                    rowOf[static_cast<std::size_t>(s)] = r;
        QCOMPARE(rowOf[0], int64_t(0)); // domain "first" holds sequence 0
        for (int64_t s = 0; s < B; ++s) {
            QVERIFY(rowOf[static_cast<std::size_t>(s)] >= 0);
            QCOMPARE(int64_t(domains[static_cast<std::size_t>(s * S)]), s == 0 ? int64_t(0) : int64_t(1));
        }
        const int E = atlas.model().numExperts, K = atlas.model().topK;
        for (int l : atlas.model().moeLayers) {
            const std::vector<float> got = atlas.readLogits(l);
            const std::vector<float> want = test::tensorValues<float>(ref, "router_logits." + std::to_string(l));
            const std::vector<int32_t> gotIds = atlas.readTopkIds(l);
            const std::vector<int64_t> wantIds = test::tensorValues<int64_t>(ref, "topk_ids." + std::to_string(l));
            const std::vector<float> margin = test::tensorValues<float>(ref, "topk_margin." + std::to_string(l));
            const std::vector<float> norms = atlas.readExpertNorms(l);
            QCOMPARE(static_cast<int64_t>(norms.size()), B * S * K);
            double err = 0;
            for (int64_t s = 0; s < B; ++s)
                for (int64_t t = 0; t < S; ++t) {
                    const int64_t mine = s * S + t, theirs = rowOf[static_cast<std::size_t>(s)] * S + t;
                    for (int e = 0; e < E; ++e)
                        err = std::max(err,
                            static_cast<double>(std::fabs(got[static_cast<std::size_t>(mine * E + e)]
                                - want[static_cast<std::size_t>(theirs * E + e)])));
                    for (int k = 0; k < K; ++k) {
                        QVERIFY(norms[static_cast<std::size_t>(mine * K + k)] > 0.0f);
                        if (margin[static_cast<std::size_t>(theirs)] > 1e-5f)
                            QCOMPARE(int64_t(gotIds[static_cast<std::size_t>(mine * K + k)]),
                                wantIds[static_cast<std::size_t>(theirs * K + k)]);
                    }
                }
            const double scale = test::maxAbs(want);
            qInfo("layer %d: atlas router logits (%s) max abs error %.3g (max |logit| %.3g)", l,
                qPrintable(logitsDtype), err, scale);
            QVERIFY(err <= (storageRounding + test::kReorderRtol) * scale);
            QCOMPARE(atlas.readHiddenSamples(l).tokenIndices.size(), std::size_t(7));
        }
    }

    // Ctrl-C (SIGINT) and kill -9 in the middle of a capture: the final name never appears, the
    // partial atlas opens with its completed layers, and --resume finishes it with exactly the
    // numbers of an uninterrupted run -- exactly because both runs are this binary on this machine with
    // --threads 1 and the same micro-batches, and the resumed one continues from the saved fp32 hidden
    // state, so every layer runs the same operations on the same values (compareAtlases).
    void interruptAndResume_data()
    {
        QTest::addColumn<int>("signal");
        QTest::newRow("SIGINT") << int(SIGINT);
        QTest::newRow("SIGKILL") << int(SIGKILL);
    }

    void interruptAndResume()
    {
        QFETCH(int, signal);
        QTemporaryDir dir;
        const QString model = generateModel(dir, QStringLiteral("model"), kInterruptModel);
        QVERIFY(!model.isEmpty());
        const QString cal = generateCalibration(dir, QStringLiteral("cal.jsonl"), 48, 256, 3);
        QVERIFY(!cal.isEmpty());
        const QStringList common = { QStringLiteral("capture"), model, QStringLiteral("--domain"),
            QStringLiteral("d=") + cal, QStringLiteral("--seq-len"), QStringLiteral("128"),
            QStringLiteral("--batch-tokens"), QStringLiteral("512"), QStringLiteral("--threads"), QStringLiteral("1") };
        const QString reference = dir.filePath(QStringLiteral("reference.atlas.h5"));
        const auto full = test::runCli(common + QStringList { QStringLiteral("-o"), reference });
        QVERIFY2(full.exitCode == 0, qPrintable(full.stdErr));

        const QString out = dir.filePath(QStringLiteral("run.atlas.h5"));
        QProcess proc;
        auto env = QProcessEnvironment::systemEnvironment();
        env.insert(QStringLiteral("MOEATLAS_PROGRESS_INTERVAL_MS"), QStringLiteral("20"));
        proc.setProcessEnvironment(env);
        proc.start(cli(), common + QStringList { QStringLiteral("-o"), out });
        QVERIFY(proc.waitForStarted());
        proc.setReadChannel(QProcess::StandardError);
        // Wait until the capture is in layer 3 (layers 1 and 2 complete), then interrupt it.
        QByteArray err;
        while (!err.contains("layer 3/6") && proc.state() == QProcess::Running) {
            proc.waitForReadyRead(100);
            err += proc.readAllStandardError();
        }
        QVERIFY2(proc.state() == QProcess::Running, "capture ended before it could be interrupted");
        ::kill(static_cast<pid_t>(proc.processId()), signal);
        QVERIFY(proc.waitForFinished(60000));
        err += proc.readAllStandardError();
        if (signal == SIGINT) {
            QCOMPARE(proc.exitStatus(), QProcess::NormalExit);
            QCOMPARE(proc.exitCode(), 130);
            QVERIFY2(err.contains("--resume"), err.constData());
        } else {
            QCOMPARE(proc.exitStatus(), QProcess::CrashExit);
        }
        QVERIFY(!QFile::exists(out));
        {
            const AtlasFile partial = AtlasFile::openReadOnly(QString(out + QStringLiteral(".partial")).toStdString());
            QVERIFY(!partial.isComplete());
            const std::vector<int> done = partial.completedLayers();
            QVERIFY2(done.size() >= 2, "layers 0 and 1 were complete before the interruption");
            // Every layer the partial atlas calls complete already holds the final numbers.
            const AtlasFile ref = AtlasFile::openReadOnly(reference.toStdString());
            for (int l : done)
                QCOMPARE(partial.readLogits(l), ref.readLogits(l));
        }
        const auto resumed
            = test::runCli(common + QStringList { QStringLiteral("--resume"), QStringLiteral("-o"), out });
        QVERIFY2(resumed.exitCode == 0, qPrintable(resumed.stdErr));
        QVERIFY2(resumed.stdErr.contains(QStringLiteral("resumed after layer")), qPrintable(resumed.stdErr));
        QVERIFY(!QFile::exists(out + QStringLiteral(".partial")));
        QVERIFY(!QFile::exists(out + QStringLiteral(".resume.safetensors")));
        compareAtlases(out, reference);
    }

    // Resuming with other calibration data than the partial atlas was made from is refused.
    void resumeRefusesOtherTokens()
    {
        QTemporaryDir dir;
        const QString model = generateModel(dir, QStringLiteral("model"), kInterruptModel);
        const QString cal = generateCalibration(dir, QStringLiteral("cal.jsonl"), 8, 256, 3);
        const QString other = generateCalibration(dir, QStringLiteral("other.jsonl"), 8, 256, 4);
        const QString out = dir.filePath(QStringLiteral("run.atlas.h5"));
        // A partial atlas: the capture of a 6-layer model is stopped at once by SIGINT-like
        // cancellation is hard to time here, so make one by resuming a finished run's twin.
        const auto first
            = test::runCli({ QStringLiteral("capture"), model, QStringLiteral("--domain"), QStringLiteral("d=") + cal,
                QStringLiteral("--seq-len"), QStringLiteral("128"), QStringLiteral("-o"), out });
        QVERIFY2(first.exitCode == 0, qPrintable(first.stdErr));
        QVERIFY(QFile::rename(out, out + QStringLiteral(".partial")));
        const auto resumed = test::runCli({ QStringLiteral("capture"), model, QStringLiteral("--domain"),
            QStringLiteral("d=") + other, QStringLiteral("--seq-len"), QStringLiteral("128"),
            QStringLiteral("--resume"), QStringLiteral("-o"), out });
        QVERIFY(resumed.exitCode != 0 && resumed.exitCode != -1);
        QVERIFY2(resumed.stdErr.contains(QStringLiteral("token")), qPrintable(resumed.stdErr));
        QVERIFY(!QFile::exists(out));
    }

    // The layer-streaming proof: a model whose weights are at least 4x the capture's peak RSS.
    void streamsModelsLargerThanMemory()
    {
        QTemporaryDir dir;
        const QString model = generateModel(dir, QStringLiteral("big"),
            { QStringLiteral("--arch"), QStringLiteral("qwen3_moe"), QStringLiteral("--layers"), QStringLiteral("16"),
                QStringLiteral("--hidden"), QStringLiteral("1024"), QStringLiteral("--heads"), QStringLiteral("16"),
                QStringLiteral("--kv-heads"), QStringLiteral("4"), QStringLiteral("--head-dim"), QStringLiteral("64"),
                QStringLiteral("--experts"), QStringLiteral("32"), QStringLiteral("--top-k"), QStringLiteral("4"),
                QStringLiteral("--expert-width"), QStringLiteral("512"), QStringLiteral("--vocab"),
                QStringLiteral("512"), QStringLiteral("--shard-mib"), QStringLiteral("512") });
        QVERIFY(!model.isEmpty());
        const Checkpoint ckpt(model.toStdString());
        const uint64_t weights = ckpt.totalBytes();
        const QString cal = generateCalibration(dir, QStringLiteral("cal.jsonl"), 4, 256, 5);
        const auto cap = test::runCli({ QStringLiteral("capture"), model, QStringLiteral("--domain"),
            QStringLiteral("d=") + cal, QStringLiteral("--seq-len"), QStringLiteral("256"), QStringLiteral("-o"),
            dir.filePath(QStringLiteral("big.atlas.h5")) });
        QVERIFY2(cap.exitCode == 0, qPrintable(cap.stdErr));
        const auto m
            = QRegularExpression(QStringLiteral("peak RSS (\\d+) MiB, largest layer (\\d+) MiB")).match(cap.stdErr);
        QVERIFY2(m.hasMatch(), qPrintable(cap.stdErr));
        const double rssMiB = m.captured(1).toDouble(), layerMiB = m.captured(2).toDouble();
        const double weightsMiB = static_cast<double>(weights) / (1024.0 * 1024.0);
        qInfo("weights %.0f MiB, peak RSS %.0f MiB (%.2fx smaller), largest layer %.0f MiB, peak RSS / largest layer "
              "%.2f",
            weightsMiB, rssMiB, weightsMiB / rssMiB, layerMiB, rssMiB / layerMiB);
        QVERIFY2(weightsMiB >= 4.0 * rssMiB, "the capture held more than a quarter of the model in memory");

        // The streaming Fisher pass over the same model and tokens: forward saving each layer's
        // input, backward in reverse reloading each layer, with the default (mask) form. The weight forms
        // add one layer's expert gradients (docs/fisher.md: 807 MiB on this model, 4.0x).
        const auto fisher = test::runCli({ QStringLiteral("fisher"), dir.filePath(QStringLiteral("big.atlas.h5")),
            QStringLiteral("--mode"), QStringLiteral("streaming"), QStringLiteral("--forms"), QStringLiteral("mask"),
            QStringLiteral("--ablate"), QStringLiteral("none") });
        QVERIFY2(fisher.exitCode == 0, qPrintable(fisher.stdErr));
        const auto f = QRegularExpression(QStringLiteral("\\(streaming\\); peak RSS (\\d+) MiB")).match(fisher.stdErr);
        QVERIFY2(f.hasMatch(), qPrintable(fisher.stdErr));
        const double fisherMiB = f.captured(1).toDouble();
        qInfo("fisher (streaming, mask form): weights %.0f MiB, peak RSS %.0f MiB (%.2fx smaller)", weightsMiB,
            fisherMiB, weightsMiB / fisherMiB);
        QVERIFY2(weightsMiB >= 4.0 * fisherMiB, "the Fisher pass held more than a quarter of the model in memory");
    }
};

QTEST_GUILESS_MAIN(TestCliCapture)
#include "tst_cli_capture.moc"
