// The engine's decoder blocks (model/blocks.h, model/rope.h) on small random fp32 inputs against a
// second implementation written for the test in the most literal form (block_reference.h): fp64 ATen
// ops, loops over sequences, heads, query positions and experts, softmax and SiLU written out, causal
// and sliding-window visibility as key ranges rather than an additive mask, top-k by repeated
// selection, every expert computed densely for every token, RoPE tables from the transformers formulas
// evaluated in double. Engine vs reference is the error model's third kind (docs/testing.md): the same
// function, other sums (fp32 against fp64), held to kReorderRtol of the largest |reference|. Each
// family also compares the engine with a deliberately wrong reference (no causal mask, the wrong head
// grouping, interleaved rotation, unrenormalised top-k ...) and requires it to land far outside that
// bar (> 1e-3, the project's vacuity threshold), so the tolerance cannot pass a wrong block. The plain
// path runs on one ATen thread; the thread-split path (blocks.cpp, splitWork) on two with the BLAS
// single-threaded.
#include "block_reference.h"
#include "model/blocks.h"
#include "runtime/runtime_policy.h"
#include "test_io.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <QTest>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

using namespace moeatlas;
using namespace moeatlas::blockref;
using moeatlas::test::kReorderRtol;

namespace {

// A wrong reference must differ from the engine by more than this fraction of the largest magnitude:
// 50x the bar, as the vacuity checks of the other numerical suites (docs/testing.md).
constexpr double kFarOutside = 1e-3;

std::vector<float> floats(const at::Tensor& t)
{
    const at::Tensor c = t.detach().to(at::kFloat).contiguous();
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// max |got - ref| / max |ref| (test_io.h); infinity when the shapes differ.
double rel(const at::Tensor& got, const at::Tensor& ref)
{
    if (got.sizes() != ref.sizes())
        return INFINITY;
    const std::vector<float> r = floats(ref);
    return test::relDiff(floats(got), r, test::maxAbs(r));
}

// Largest measured difference per family, printed at the end (the numbers the report quotes).
std::map<std::string, double>& worst()
{
    static std::map<std::string, double> m;
    return m;
}

void note(const std::string& family, double diff)
{
    double& w = worst()[family];
    w = std::max(w, diff);
}

// Fails unless `diff` is within the reordering bar; records it under `family`.
#define CHECK_CLOSE(family, diff)                                                                                      \
    do {                                                                                                               \
        const double d_ = (diff);                                                                                      \
        note(family, d_);                                                                                              \
        QVERIFY2(                                                                                                      \
            d_ <= kReorderRtol, qPrintable(QStringLiteral("%1: %2 of max |ref|").arg(QLatin1String(family)).arg(d_))); \
    } while (false)

// Fails unless a deliberately wrong reference is far from the engine (the check has teeth).
#define CHECK_FAR(what, diff)                                                                                          \
    do {                                                                                                               \
        const double d_ = (diff);                                                                                      \
        QVERIFY2(d_ > kFarOutside,                                                                                     \
            qPrintable(                                                                                                \
                QStringLiteral("wrong reference '%1' is only %2 away: vacuous").arg(QLatin1String(what)).arg(d_)));    \
    } while (false)

// The executor's thread configuration for the blocks: `threads` ATen threads and the BLAS on one
// thread. With two threads the blocks split their products themselves (splitWork in blocks.cpp).
class BlockThreads : public ThreadScope {
public:
    explicit BlockThreads(int threads)
        : ThreadScope(threads, 1)
    {
    }
};

// The split path needs LibTorch's OpenMP runtime (and a single-threaded BLAS, which BlockThreads sets).
bool splitPossible()
{
    return runtimeInfo().openmp;
}

} // namespace

class TstBlocks : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void cleanupTestCase()
    {
        for (const auto& [family, diff] : worst())
            qInfo("largest relative difference, %-34s %.3g", family.c_str(), diff);
    }

    // --- RMSNorm ---

    // x = [1, 2, 3, 4], w = [1, 1, 0.5, 2], eps = 0.5: mean(x^2) + eps = 7.5 + 0.5 = 8, so
    // y = x * w / (2 sqrt 2) = [sqrt2/4, sqrt2/2, 3 sqrt2/8, 2 sqrt2].
    void rmsNormByHand()
    {
        const at::Tensor x = at::tensor({ 1.0f, 2.0f, 3.0f, 4.0f }).view({ 1, 4 });
        const at::Tensor w = at::tensor({ 1.0f, 1.0f, 0.5f, 2.0f });
        const double r2 = std::sqrt(2.0);
        const at::Tensor expected = at::tensor({ r2 / 4, r2 / 2, 3 * r2 / 8, 2 * r2 }, at::kDouble).view({ 1, 4 });
        const at::Tensor y = rmsNorm(x, w, 0.5);
        QVERIFY(y.scalar_type() == at::kFloat);
        CHECK_CLOSE("rmsNorm", rel(y, expected));
        // Without eps: 1 / sqrt(7.5) instead of 1 / sqrt(8), 3% off.
        CHECK_FAR("eps ignored", rel(y, dbl(x * w) / std::sqrt(7.5)));
    }

    void rmsNormRandom()
    {
        at::manual_seed(1);
        const at::Tensor x = rnd({ 5, 3, 24 }, 2.0) + 0.7;
        const at::Tensor w = 1.0 + rnd({ 24 }, 0.5);
        const at::Tensor y = rmsNorm(x, w, 1e-6);
        QVERIFY(y.sizes() == x.sizes());
        CHECK_CLOSE("rmsNorm", rel(y, referenceRmsNorm(x, w, 1e-6)));
        CHECK_FAR("centred (LayerNorm)", rel(y, referenceRmsNorm(x, w, 1e-6, true)));
    }

    // --- RoPE ---

    void ropeTables_data()
    {
        QTest::addColumn<int>("index");
        const std::vector<RopeCase> cases = ropeCases();
        for (std::size_t i = 0; i < cases.size(); ++i)
            QTest::newRow(cases[i].name) << static_cast<int>(i);
    }
    void ropeTables()
    {
        QFETCH(int, index);
        const RopeCase c = ropeCases()[static_cast<std::size_t>(index)];
        const RopeTables t = computeRopeTables(c.spec, c.seqLen);
        const ReferenceRope r = referenceRopeTables(c.spec, c.seqLen);
        QCOMPARE(t.rotaryDim, static_cast<int64_t>(2 * r.invFreq.size()));
        const double diff = tableDistance(t, r);
        note("rope tables (per element)", diff);
        QVERIFY2(diff <= kReorderRtol, qPrintable(QString::number(diff)));
        CHECK_FAR("misread configuration", tableDistance(t, referenceRopeTables(c.wrong, c.seqLen)));
    }

    // cos/sin [S, hd]: cos(p * invFreq[j mod hd/2]) * attention scaling, the frequencies repeated for
    // the two halves (HF layout). A yarn configuration, so that the scaling is not 1.
    void rotaryCache()
    {
        ModelSpec s = ropeSpec("yarn", 32, 10000.0);
        s.rope.factor = 4.0;
        s.rope.originalMaxPositionEmbeddings = 64;
        const int64_t S = 40, half = 16;
        const RotaryCache c = buildRotaryCache(s, S, at::TensorOptions().dtype(at::kFloat));
        QCOMPARE(c.seqLen, S);
        QVERIFY(c.cos.sizes() == (at::IntArrayRef { S, 2 * half }) && c.sin.sizes() == c.cos.sizes());
        QVERIFY(c.cos.scalar_type() == at::kFloat);
        const ReferenceRope r = referenceRopeTables(s, S);
        const auto table = [&](bool sine, int64_t shift, double scaling) {
            at::Tensor out = at::empty({ S, 2 * half }, at::kDouble);
            auto o = out.accessor<double, 2>();
            for (int64_t p = 0; p < S; ++p)
                for (int64_t j = 0; j < 2 * half; ++j) {
                    const double angle = static_cast<double>(p + shift) * r.invFreq[static_cast<std::size_t>(j % half)];
                    o[p][j] = (sine ? std::sin(angle) : std::cos(angle)) * scaling;
                }
            return out;
        };
        CHECK_CLOSE("rotary cache", rel(c.cos, table(false, 0, r.scaling)));
        CHECK_CLOSE("rotary cache", rel(c.sin, table(true, 0, r.scaling)));
        CHECK_FAR("positions from 1", rel(c.cos, table(false, 1, r.scaling)));
        CHECK_FAR("no attention scaling", rel(c.sin, table(true, 0, 1.0)));
    }

    // --- Attention ---

    void attentionMatchesReference_data()
    {
        QTest::addColumn<int>("kvHeads");
        QTest::addColumn<int>("qkNorm");
        QTest::addColumn<bool>("bias");
        QTest::addColumn<double>("clip");
        QTest::addColumn<int>("window");
        QTest::addColumn<bool>("sliding");
        QTest::addColumn<int>("numSeqs");
        QTest::addColumn<int>("seqLen");
        QTest::addColumn<int>("threads");
        const int none = static_cast<int>(QkNorm::None), perHead = static_cast<int>(QkNorm::PerHead),
                  full = static_cast<int>(QkNorm::Full);
        for (const int threads : { 1, 2 }) {
            const auto row = [&](const char* name) -> QTestData& {
                return QTest::addRow("%s, %s", name, threads == 1 ? "plain" : "split");
            };
            row("mha, one sequence") << 4 << none << false << 0.0 << 0 << false << 1 << 24 << threads;
            row("gqa 4:2, q/k/v/o biases, 3 sequences") << 2 << none << true << 0.0 << 0 << false << 3 << 20 << threads;
            row("mqa 4:1, per-head q/k norm (qwen3)")
                << 1 << perHead << false << 0.0 << 0 << false << 2 << 16 << threads;
            row("gqa 4:2, full q/k norm + clip (olmoe)")
                << 2 << full << false << 0.8 << 0 << false << 2 << 16 << threads;
            row("sliding window 5") << 2 << none << true << 0.0 << 5 << true << 2 << 20 << threads;
            row("window configured, layer not sliding")
                << 2 << none << false << 0.0 << 5 << false << 2 << 20 << threads;
            // 256 tokens: the projections take linear()'s row-block split on two threads.
            row("gqa 4:2, 4 x 64 tokens") << 2 << perHead << true << 0.0 << 0 << false << 4 << 64 << threads;
        }
    }
    void attentionMatchesReference()
    {
        QFETCH(int, kvHeads);
        QFETCH(int, qkNorm);
        QFETCH(bool, bias);
        QFETCH(double, clip);
        QFETCH(int, window);
        QFETCH(bool, sliding);
        QFETCH(int, numSeqs);
        QFETCH(int, seqLen);
        QFETCH(int, threads);
        if (threads > 1 && !splitPossible())
            QSKIP("the blocks split their products only with LibTorch's OpenMP runtime");
        ModelSpec s = attentionSpec();
        s.numKvHeads = kvHeads;
        s.qkNorm = static_cast<QkNorm>(qkNorm);
        s.qkvBias = s.oBias = bias;
        if (clip > 0)
            s.clipQkv = clip;
        if (window > 0)
            s.slidingWindow = window;
        const LayerWeights w = randomAttentionWeights(s, 7);
        at::manual_seed(8);
        const at::Tensor x = rnd({ int64_t { numSeqs } * seqLen, s.hiddenSize }, 1.0);
        const RotaryCache rope = buildRotaryCache(s, seqLen, at::TensorOptions().dtype(at::kFloat));
        at::Tensor y;
        {
            const BlockThreads t(threads);
            const at::NoGradGuard noGrad;
            y = attention(s, w, x, numSeqs, rope, sliding);
        }
        QVERIFY(y.sizes() == x.sizes());
        CHECK_CLOSE(threads == 1 ? "attention (plain)" : "attention (split)",
            rel(y, referenceAttention(s, w, x, numSeqs, sliding)));
        if (clip > 0) // the clamp bites: some projections exceed it
            QVERIFY(at::matmul(x, w.q.weight.t()).abs().max().item<double>() > 2 * clip);

        std::vector<std::pair<const char*, AttnFault>> faults { { "no causal mask", AttnFault::NoCausalMask },
            { "interleaved rotation", AttnFault::InterleavedRope } };
        if (kvHeads > 1 && kvHeads < s.numHeads)
            faults.push_back({ "kv head h % nkv", AttnFault::WrongGrouping });
        if (sliding)
            faults.push_back({ "window ignored", AttnFault::NoWindow });
        if (qkNorm != static_cast<int>(QkNorm::None))
            faults.push_back({ "no q/k norm", AttnFault::NoQkNorm });
        if (bias)
            faults.push_back({ "biases ignored", AttnFault::NoBias });
        if (numSeqs > 1)
            faults.push_back({ "sequences as one", AttnFault::OneSequence });
        for (const auto& [what, fault] : faults)
            CHECK_FAR(what, rel(y, referenceAttention(s, w, x, numSeqs, sliding, fault)));
    }

    // Packed sequences are independent: each equals the same sequence run alone (other GEMM row
    // counts, hence the reordering bar).
    void attentionSequencesIndependent()
    {
        const ModelSpec s = attentionSpec();
        const LayerWeights w = randomAttentionWeights(s, 9);
        at::manual_seed(10);
        const int64_t S = 12;
        const at::Tensor x = rnd({ 3 * S, s.hiddenSize }, 1.0);
        const RotaryCache rope = buildRotaryCache(s, S, at::TensorOptions().dtype(at::kFloat));
        const BlockThreads t(1);
        const at::NoGradGuard noGrad;
        const at::Tensor packed = attention(s, w, x, 3, rope, false);
        for (int64_t b = 0; b < 3; ++b)
            CHECK_CLOSE("attention (packed vs alone)",
                rel(packed.narrow(0, b * S, S), attention(s, w, x.narrow(0, b * S, S), 1, rope, false)));
        // The second sequence alone at positions 12..23 of one long sequence is another function.
        CHECK_FAR("positions continued",
            rel(packed.narrow(0, S, S),
                attention(s, w, x.narrow(0, 0, 2 * S), 1,
                    buildRotaryCache(s, 2 * S, at::TensorOptions().dtype(at::kFloat)), false)
                    .narrow(0, S, S)));
    }

    // --- MoE block ---

    void moeMatchesReference_data()
    {
        QTest::addColumn<int>("arch");
        QTest::addColumn<bool>("normTopk");
        QTest::addColumn<bool>("shared");
        QTest::addColumn<bool>("dropped");
        QTest::addColumn<bool>("unitMask");
        QTest::addColumn<int>("tokens");
        QTest::addColumn<int>("threads");
        const int mixtral = static_cast<int>(Architecture::Mixtral), qwen2 = static_cast<int>(Architecture::Qwen2Moe),
                  qwen3 = static_cast<int>(Architecture::Qwen3Moe), olmoe = static_cast<int>(Architecture::Olmoe);
        for (const int threads : { 1, 2 }) {
            const auto row = [&](const char* name) -> QTestData& {
                return QTest::addRow("%s, %s", name, threads == 1 ? "plain" : "split");
            };
            row("mixtral, renormalised") << mixtral << true << false << false << false << 40 << threads;
            row("qwen2_moe, shared expert + gate") << qwen2 << false << true << false << false << 40 << threads;
            row("qwen3_moe, dropped experts") << qwen3 << true << false << true << false << 40 << threads;
            row("olmoe, unit mask") << olmoe << false << false << false << true << 40 << threads;
            row("qwen2_moe, dropped + mask, 300 tokens") << qwen2 << false << true << true << true << 300 << threads;
        }
    }
    void moeMatchesReference()
    {
        QFETCH(int, arch);
        QFETCH(bool, normTopk);
        QFETCH(bool, shared);
        QFETCH(bool, dropped);
        QFETCH(bool, unitMask);
        QFETCH(int, tokens);
        QFETCH(int, threads);
        if (threads > 1 && !splitPossible())
            QSKIP("the blocks split their products only with LibTorch's OpenMP runtime");
        const ModelSpec s = moeSpec(static_cast<Architecture>(arch), normTopk, shared);
        const int64_t E = s.router.numExperts, I = s.moeIntermediate;
        const LayerWeights w = randomMoeWeights(s, 20 + static_cast<uint64_t>(arch));
        at::manual_seed(30);
        const at::Tensor x = rnd({ tokens, s.hiddenSize }, 1.0);
        MoeOptions o;
        o.recordExpertNorms = true;
        if (dropped) {
            o.keptExperts = at::ones({ E }, at::kBool);
            for (const int64_t e : { 1, 4, 6 })
                o.keptExperts[e] = false;
        }
        if (unitMask) {
            o.unitMask = (at::rand({ E, I }) > 0.3).to(at::kFloat);
            o.unitActivationSum = at::zeros({ E, I }, at::kDouble);
        }
        RoutingRecord record;
        at::Tensor y;
        {
            const BlockThreads t(threads);
            const at::NoGradGuard noGrad;
            y = moeForward(s, w, x, o, &record);
        }
        const MoeReference r = referenceMoe(s, w, x, o.keptExperts, o.unitMask);
        // Random logits: no two of a token's top k + 1 probabilities within 1e-5 of each other, so fp32
        // and fp64 select the same experts in the same order.
        QVERIFY2(r.smallestGap > 1e-5, qPrintable(QStringLiteral("near tie in the fixture: %1").arg(r.smallestGap)));
        const std::string mode = threads == 1 ? " (plain)" : " (split)";
        CHECK_CLOSE(("moe output" + mode).c_str(), rel(y, r.out));
        CHECK_CLOSE("router logits", rel(record.logits, r.logits));
        QVERIFY(record.topkIds.scalar_type() == at::kInt);
        QVERIFY(at::equal(record.topkIds.to(at::kLong), r.ids));
        CHECK_CLOSE("top-k weights", rel(record.topkWeights, r.weights));
        CHECK_CLOSE("expert norms", rel(record.expertNorms, r.norms));
        if (dropped)
            for (const int64_t e : { 1, 4, 6 })
                QVERIFY(!(record.topkIds == e).any().item<bool>());
        if (unitMask)
            CHECK_CLOSE("unit activation sums", rel(o.unitActivationSum, r.unitSums));

        std::vector<std::pair<const char*, MoeFault>> faults { { "expert id + 1", MoeFault::WrongExpert },
            { "renormalisation flipped", MoeFault::FlipRenorm } };
        // With renormalisation, softmax-then-top-k equals top-k-then-softmax (Mixtral's form).
        if (!normTopk)
            faults.push_back({ "softmax over the top k", MoeFault::SoftmaxOverTopK });
        if (dropped)
            faults.push_back({ "kept experts ignored", MoeFault::IgnoreKept });
        if (shared)
            faults.push_back({ "shared expert ungated", MoeFault::UngatedShared });
        if (unitMask)
            faults.push_back({ "unit mask ignored", MoeFault::NoUnitMask });
        for (const auto& [what, fault] : faults)
            CHECK_FAR(what, rel(y, referenceMoe(s, w, x, o.keptExperts, o.unitMask, fault).out));
    }

    // Experts cut to kept units (sliceExperts, zero-width experts included) compute the function of the
    // 0/1 unit mask with the same units: against the dense reference with that mask, through
    // options.ragged and as a ragged layer's own experts (w.ragged: the same operations, so equal).
    void moeRaggedExperts_data()
    {
        QTest::addColumn<int>("threads");
        QTest::newRow("plain") << 1;
        QTest::newRow("split") << 2;
    }
    void moeRaggedExperts()
    {
        QFETCH(int, threads);
        if (threads > 1 && !splitPossible())
            QSKIP("the blocks split their products only with LibTorch's OpenMP runtime");
        const ModelSpec s = moeSpec(Architecture::Qwen3Moe, true, false);
        const int64_t E = s.router.numExperts, I = s.moeIntermediate;
        LayerWeights w = randomMoeWeights(s, 40);
        std::vector<std::vector<int>> units(static_cast<std::size_t>(E));
        at::Tensor mask = at::zeros({ E, I });
        for (int64_t e = 0; e < E; ++e) {
            if (e % 3 == 1)
                continue; // zero width: its router row still counts, its output is lost
            for (int u = static_cast<int>(e % 2); u < I; u += 1 + static_cast<int>(e % 3))
                units[static_cast<std::size_t>(e)].push_back(u);
            for (const int u : units[static_cast<std::size_t>(e)])
                mask[e][u] = 1.0;
        }
        const RaggedExperts ragged = sliceExperts(w, units);
        at::manual_seed(41);
        const at::Tensor x = rnd({ 50, s.hiddenSize }, 1.0);
        MoeOptions o;
        o.ragged = &ragged;
        o.recordExpertNorms = true;
        RoutingRecord record;
        const BlockThreads t(threads);
        const at::NoGradGuard noGrad;
        const at::Tensor y = moeForward(s, w, x, o, &record);
        const MoeReference r = referenceMoe(s, w, x, {}, mask);
        CHECK_CLOSE("moe output (sliced experts)", rel(y, r.out));
        CHECK_CLOSE("expert norms", rel(record.expertNorms, r.norms));
        QVERIFY(at::equal(record.topkIds.to(at::kLong), r.ids));
        CHECK_FAR("sliced units ignored", rel(y, referenceMoe(s, w, x, {}, {}).out));

        LayerWeights raggedLayer = w;
        raggedLayer.gateUp = raggedLayer.down = at::Tensor();
        raggedLayer.ragged = ragged;
        // The same experts through the layer instead of the options: the same operations, bit for bit.
        QVERIFY(at::equal(moeForward(s, raggedLayer, x, {}, nullptr), y));

        MoeOptions bad = o;
        bad.unitMask = at::ones({ E, I });
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, moeForward(s, w, x, bad, nullptr));
        RaggedExperts fewer = ragged;
        fewer.widths.pop_back();
        fewer.gateUp.pop_back();
        fewer.down.pop_back();
        MoeOptions wrongCount;
        wrongCount.ragged = &fewer;
        QVERIFY_THROWS_EXCEPTION(std::invalid_argument, moeForward(s, w, x, wrongCount, nullptr));
    }

    // Equal probabilities: blocks.cpp documents no tie-breaking; at::topk (as torch.topk in transformers)
    // picks among equal values in an unspecified order. Two experts with the same router row and the same
    // weights tie on every token; whichever the engine picks, the ids stay within the tied pair where
    // the reference picks one of them, the weights equal the reference's, and the output is the same.
    void moeTies()
    {
        const ModelSpec s = moeSpec(Architecture::Qwen3Moe, false, false);
        LayerWeights w = randomMoeWeights(s, 50);
        w.router[5].copy_(w.router[3]);
        w.gateUp[5].copy_(w.gateUp[3]);
        w.down[5].copy_(w.down[3]);
        at::manual_seed(51);
        const at::Tensor x = rnd({ 60, s.hiddenSize }, 1.0);
        RoutingRecord record;
        const BlockThreads t(1);
        const at::NoGradGuard noGrad;
        const at::Tensor y = moeForward(s, w, x, {}, &record);
        const MoeReference r = referenceMoe(s, w, x, {}, {});
        CHECK_CLOSE("moe output (ties)", rel(y, r.out));
        CHECK_CLOSE("top-k weights", rel(record.topkWeights, r.weights));
        const at::Tensor tied = (r.ids == 3).logical_or(r.ids == 5);
        const at::Tensor got = record.topkIds.to(at::kLong);
        QVERIFY(at::equal(tied, (got == 3).logical_or(got == 5)));
        QVERIFY(at::equal(got.masked_fill(tied, -1), r.ids.masked_fill(tied, -1)));
        QVERIFY(tied.any().item<bool>()); // the pair is selected somewhere
    }

    // --- Dense MLP and linear()'s row-block split ---

    // 300 rows: on two threads linear() multiplies row blocks of at most 128 rows on each thread, a GEMM
    // of other shapes than at::linear's (the reordering bar); on one thread it calls at::linear, the
    // same operations as the composition below (bit for bit).
    void denseMlpAndLinearSplit()
    {
        const ModelSpec s = moeSpec(Architecture::Qwen2Moe, false, true);
        const LayerWeights w = randomMoeWeights(s, 60);
        at::manual_seed(61);
        const at::Tensor x = rnd({ 300, s.hiddenSize }, 1.0);
        const at::NoGradGuard noGrad;
        const auto composition = [&] {
            return at::linear(
                at::silu(at::linear(x, w.mlpGate.weight)) * at::linear(x, w.mlpUp.weight), w.mlpDown.weight);
        };
        at::Tensor plain, expected;
        {
            const BlockThreads t(1);
            plain = denseMlp(w, x);
            expected = composition();
        }
        QVERIFY(at::equal(plain, expected));
        CHECK_CLOSE("dense mlp", rel(plain, referenceMlp(w, x)));
        CHECK_FAR("silu -> sigmoid",
            rel(plain,
                at::matmul(
                    at::sigmoid(dbl(x).matmul(dbl(w.mlpGate.weight).t())) * dbl(x).matmul(dbl(w.mlpUp.weight).t()),
                    dbl(w.mlpDown.weight).t())));
        if (!splitPossible())
            QSKIP("the blocks split their products only with LibTorch's OpenMP runtime");
        at::Tensor split;
        {
            const BlockThreads t(2);
            split = denseMlp(w, x);
            expected = composition();
        }
        CHECK_CLOSE("linear split vs at::linear", rel(split, expected));
        CHECK_CLOSE("dense mlp", rel(split, referenceMlp(w, x)));
        // A row block lost or written twice (rows 128..255 shifted) is far outside.
        CHECK_FAR(
            "row blocks shifted", rel(split, at::cat({ expected.narrow(0, 0, 128), expected.narrow(0, 0, 172) })));
    }

    // With autograd recording, the blocks take their plain paths (splitWork: never under grad mode): the
    // split paths' out= ops refuse operands that require grad (checked first, so that "no exception"
    // means something). On two threads with the BLAS single-threaded -- where the split path would run
    // -- every block records a graph, and its gradients equal the fp64 reference's.
    void noSplitUnderAutograd()
    {
        if (!splitPossible())
            QSKIP("the blocks split their products only with LibTorch's OpenMP runtime");
        const BlockThreads t(2);
        const at::AutoGradMode grad(true);
        {
            const at::Tensor a = at::randn({ 4, 4 }).requires_grad_();
            at::Tensor out = at::empty({ 4, 4 });
            QVERIFY_THROWS_EXCEPTION(c10::Error, at::mm_out(out, a, a));
        }

        // Dense MLP (linear's split), 300 rows.
        const ModelSpec ms = moeSpec(Architecture::Qwen2Moe, false, true);
        LayerWeights mw = randomMoeWeights(ms, 70);
        at::manual_seed(71);
        const at::Tensor x = rnd({ 300, ms.hiddenSize }, 1.0);
        const at::Tensor probe = rnd({ 300, ms.hiddenSize }, 1.0);
        for (Linear* l : { &mw.mlpGate, &mw.mlpUp, &mw.mlpDown })
            l->weight.requires_grad_(true);
        (denseMlp(mw, x) * probe).sum().backward();
        LayerWeights md = mw;
        for (Linear* l : { &md.mlpGate, &md.mlpUp, &md.mlpDown })
            l->weight = dbl(l->weight.detach()).requires_grad_(true);
        (referenceMlp(md, x) * dbl(probe)).sum().backward();
        for (const auto& [got, ref] : { std::pair { &mw.mlpGate, &md.mlpGate }, std::pair { &mw.mlpUp, &md.mlpUp },
                 std::pair { &mw.mlpDown, &md.mlpDown } })
            CHECK_CLOSE("gradients (autograd)", rel(got->weight.grad(), ref->weight.grad()));

        // Attention (head split and linear's split), 4 x 64 tokens.
        ModelSpec as = attentionSpec();
        as.qkNorm = QkNorm::PerHead;
        LayerWeights aw = randomAttentionWeights(as, 72);
        for (Linear* l : { &aw.q, &aw.k, &aw.v, &aw.o })
            l->weight.requires_grad_(true);
        const at::Tensor ax = rnd({ 256, as.hiddenSize }, 1.0), aprobe = rnd({ 256, as.hiddenSize }, 1.0);
        const at::Tensor ay
            = attention(as, aw, ax, 4, buildRotaryCache(as, 64, at::TensorOptions().dtype(at::kFloat)), false);
        QVERIFY(ay.requires_grad());
        (ay * aprobe).sum().backward();
        LayerWeights ad = aw;
        for (Linear* l : { &ad.q, &ad.k, &ad.v, &ad.o })
            l->weight = dbl(l->weight.detach()).requires_grad_(true);
        (referenceAttention(as, ad, ax, 4, false) * dbl(aprobe)).sum().backward();
        for (const auto& [got, ref] : { std::pair { &aw.q, &ad.q }, std::pair { &aw.k, &ad.k },
                 std::pair { &aw.v, &ad.v }, std::pair { &aw.o, &ad.o } })
            CHECK_CLOSE("gradients (autograd)", rel(got->weight.grad(), ref->weight.grad()));

        // MoE block with a unit mask requiring grad: the mask-form Fisher signal, and the router's
        // gradient through the routing weights.
        const ModelSpec es = moeSpec(Architecture::Qwen3Moe, true, false);
        LayerWeights ew = randomMoeWeights(es, 73);
        const at::Tensor ex = rnd({ 40, es.hiddenSize }, 1.0), eprobe = rnd({ 40, es.hiddenSize }, 1.0);
        ew.router.requires_grad_(true);
        MoeOptions o;
        o.unitMask = at::ones({ es.router.numExperts, es.moeIntermediate }).requires_grad_(true);
        (moeForward(es, ew, ex, o, nullptr) * eprobe).sum().backward();
        LayerWeights ed = ew;
        ed.router = dbl(ew.router.detach()).requires_grad_(true);
        const at::Tensor refMask
            = at::ones({ es.router.numExperts, es.moeIntermediate }, at::kDouble).requires_grad_(true);
        (referenceMoe(es, ed, ex, {}, refMask).out * dbl(eprobe)).sum().backward();
        CHECK_CLOSE("gradients (autograd)", rel(o.unitMask.grad(), refMask.grad()));
        CHECK_CLOSE("gradients (autograd)", rel(ew.router.grad(), ed.router.grad()));
        const at::Tensor wrongMask = at::ones_like(refMask).requires_grad_(true);
        (referenceMoe(es, ed, ex, {}, wrongMask, MoeFault::FlipRenorm).out * dbl(eprobe)).sum().backward();
        CHECK_FAR("mask gradient, renormalisation flipped", rel(o.unitMask.grad(), wrongMask.grad()));
    }

    // The split path runs where grad mode is off, e.g. under inference mode (the executor's mode), and
    // computes what the plain path does up to the order of sums.
    void splitUnderInferenceMode()
    {
        if (!splitPossible())
            QSKIP("the blocks split their products only with LibTorch's OpenMP runtime");
        const ModelSpec s = moeSpec(Architecture::Qwen2Moe, false, true);
        const LayerWeights w = randomMoeWeights(s, 80);
        at::manual_seed(81);
        const at::Tensor x = rnd({ 300, s.hiddenSize }, 1.0);
        at::Tensor plain, split;
        {
            const BlockThreads t(1);
            const c10::InferenceMode inference;
            plain = moeForward(s, w, x, {}, nullptr);
        }
        {
            const BlockThreads t(2);
            const c10::InferenceMode inference;
            split = moeForward(s, w, x, {}, nullptr);
        }
        CHECK_CLOSE("moe split vs plain", rel(split, plain));
        CHECK_CLOSE("moe output (split)", rel(split, referenceMoe(s, w, x, {}, {}).out));
    }
};

QTEST_GUILESS_MAIN(TstBlocks)
#include "tst_blocks.moc"
