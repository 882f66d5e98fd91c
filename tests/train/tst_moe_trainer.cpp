// The demo MoE trainer (core/train/moe_trainer): the load-balancing loss on a hand-computed case,
// a tiny training run that learns (loss far below ln V and below the unigram baseline), its
// atomic output and cancellation, and its forward pass against the engine's (Executor) on a
// saved random model.
#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "runtime/executor.h"
#include "test_io.h"
#include "text/tokenizer.h"
#include "train/bpe_trainer.h"
#include "train/demo_corpus.h"
#include "train/moe_trainer.h"
#include "util/error.h"

#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <filesystem>

using namespace moeatlas;

namespace {

DemoModelConfig tinyConfig(int64_t vocab)
{
    DemoModelConfig c;
    c.numLayers = 2;
    c.hiddenSize = 32;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.numExperts = 4;
    c.topK = 2;
    c.expertWidth = 32;
    c.vocabSize = vocab;
    return c;
}

} // namespace

class TstMoeTrainer : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void auxLossHandComputed()
    {
        // fp32 arithmetic on a handful of values of order 1: within a few ulp (~1e-7) of the exact values
        // worked out below, whatever the CPU, so 1e-6.
        // Token 0: probs [0.5, 0.3, 0.2]; token 1: probs [0.1, 0.6, 0.3] (logits are log-probs).
        const std::vector<float> logits
            = { std::log(5.f), std::log(3.f), std::log(2.f), std::log(1.f), std::log(6.f), std::log(3.f) };
        // P = [0.3, 0.45, 0.25]. top-1: f = [0.5, 0.5, 0] -> 3 * (0.15 + 0.225) = 1.125.
        QVERIFY(std::abs(loadBalancingLoss(logits, 3, 1) - 1.125) < 1e-6);
        // top-2 adds the second choices f2 = [0, 0.5, 0.5] -> 3 * (0.375 + 0.225 + 0.125) = 2.175.
        QVERIFY(std::abs(loadBalancingLoss(logits, 3, 2) - 2.175) < 1e-6);
        // Uniform routing gives top_k, the balanced value.
        const std::vector<float> flat(8 * 4, 0.25f);
        QVERIFY(std::abs(loadBalancingLoss(flat, 4, 2) - 2.0) < 1e-6);
        QVERIFY_THROWS_EXCEPTION(InputError, loadBalancingLoss(logits, 4, 1));
    }

    void tinyRunLearns()
    {
        DemoCorpusOptions co;
        co.trainDocs = 120;
        co.calibrationDocs = 4;
        co.heldoutDocs = 12;
        const auto docs = generateDemoCorpus(co);
        std::vector<std::string> trainText;
        for (const auto& d : docs[0])
            trainText.insert(trainText.end(), d.begin(), d.end());
        BpeTrainerOptions bo;
        bo.vocabSize = 320;
        const Tokenizer tok = Tokenizer::fromJson(bpeTokenizerJson(trainBpe(trainText, bo)));
        const int64_t seqLen = 32;
        auto pack = [&](std::size_t split) {
            std::vector<DomainSequences> out;
            for (std::size_t d = 0; d < demoDomains().size(); ++d) {
                std::vector<std::vector<int32_t>> ids;
                for (const auto& doc : docs[split][d])
                    ids.push_back(tok.encode(doc, false));
                out.push_back({ demoDomains()[d], packDocuments(ids, 256, seqLen) });
            }
            return out;
        };
        TrainOptions o;
        o.model = tinyConfig(320);
        o.steps = 150;
        o.batchSequences = 8;
        o.seqLen = seqLen;
        o.learningRate = 1e-2;
        o.warmupSteps = 10;
        o.saveDtype = DType::F32;
        QTemporaryDir dir;
        const std::filesystem::path out = dir.filePath(QStringLiteral("model")).toStdString();
        int calls = 0;
        int64_t lastDone = 0;
        const TrainReport r = trainDemoModel(o, pack(0), pack(2), out, {}, false, [&](const Progress& p) {
            ++calls;
            lastDone = p.done;
            return true;
        });
        qInfo("tiny run: first %.3f final %.3f held-out %.3f unigram %.3f ln(V) %.3f", r.firstLoss, r.finalTrainLoss,
            r.heldoutLoss, r.unigramLoss, std::log(320.0));
        QCOMPARE(calls, 150);
        QCOMPARE(lastDone, int64_t(150 * 8 * seqLen));
        QVERIFY(std::abs(r.firstLoss - std::log(320.0)) < 0.3); // starts near uniform
        QVERIFY(r.finalTrainLoss < 0.6 * std::log(320.0));
        QVERIFY(r.heldoutLoss < r.unigramLoss - 0.3);
        QVERIFY(r.finalAuxLoss >= 1.0 && r.finalAuxLoss < 2.5); // near top_k = 2 when balanced

        // The saved checkpoint is a valid mixtral our engine accepts.
        const Checkpoint ckpt(out);
        const ModelSpec spec = parseModelSpec(ckpt.config(), (out / "config.json").string());
        QCOMPARE(spec.router.numExperts, 4);
        QVERIFY(spec.router.normTopkProb);
        QVERIFY(std::filesystem::exists(out / "generation_config.json"));
        QVERIFY(!std::filesystem::exists(out.string() + ".partial"));

        // Cancelled from the progress callback: nothing is left behind.
        const std::filesystem::path cancelled = dir.filePath(QStringLiteral("cancelled")).toStdString();
        o.steps = 20;
        QVERIFY_THROWS_EXCEPTION(Cancelled,
            trainDemoModel(o, pack(0), pack(2), cancelled, {}, false, [](const Progress& p) { return p.done < 512; }));
        QVERIFY(!std::filesystem::exists(cancelled));
        QVERIFY(!std::filesystem::exists(cancelled.string() + ".partial"));
    }

    void forwardMatchesEngine()
    {
        DemoModelConfig c = tinyConfig(96);
        c.initStd = 0.15; // larger than training's init, so routing and attention are far from uniform
        c.routerInitStd = 1.0;
        QTemporaryDir dir;
        const std::filesystem::path out = dir.filePath(QStringLiteral("random")).toStdString();
        writeInitialDemoModel(c, 3, out);
        const int64_t S = 24, B = 3;
        std::vector<int32_t> tokens;
        SplitMix64 rng(9);
        for (int64_t i = 0; i < B * S; ++i)
            tokens.push_back(static_cast<int32_t>(rng.below(96)));
        const std::vector<float> ours = demoModelLogits(out, tokens, S);

        const Checkpoint ckpt(out);
        const ModelSpec spec = parseModelSpec(ckpt.config(), (out / "config.json").string());
        ExecutorOptions eo;
        eo.computeLogits = true;
        Executor ex(ckpt, spec, eo);
        ExecutionObserver none;
        std::vector<int64_t> offsets;
        for (int64_t b = 0; b <= B; ++b)
            offsets.push_back(b * S);
        const ExecutionResult engine = ex.run(tokens, offsets, none);
        QCOMPARE(engine.logits.size(), ours.size());
        // Two implementations of the same fp32 forward (the trainer's autograd ops on the whole batch, the
        // engine's blocks on its micro-batches, possibly on the thread-split path): sums in other orders,
        // so within kReorderRtol of the largest |logit| (test_io.h).
        const double maxAbs = test::maxAbs(engine.logits);
        const double rel = test::relDiff(ours, engine.logits, maxAbs);
        qInfo("trainer vs engine logits: max |diff| %.3g of max |logit| %.3g", rel, maxAbs);
        QVERIFY(maxAbs > 0.1);
        QVERIFY(rel <= test::kReorderRtol);
    }
};

QTEST_GUILESS_MAIN(TstMoeTrainer)
#include "tst_moe_trainer.moc"
