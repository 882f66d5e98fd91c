// deepseek_v3's multi-head latent attention (model/mla_attention.cpp, reached through attention()) on small
// random fp32 inputs against a literal fp64 reference written here from DeepseekV3Attention's definition: per
// sequence, head and query position, the query [q_nope; RoPE(q_rope)] from q_proj or the q-LoRA path, the key
// [k_nope; RoPE(k_rope)] with k_nope from the normalised latent through kv_b_proj and k_rope shared by every
// head, softmax over the visible keys of the scores times qk_head_dim^-0.5 * mscale(factor, mscale_all_dim)^2,
// the values from the latent. The reference rotates interleaved pairs (x_2j, x_2j+1) in place (transformers
// writes them as [even; odd] halves: the same dot products). Held to kReorderRtol of the largest |reference|;
// each case also checks deliberately wrong references far outside that bar (docs/testing.md). Plain path on
// one ATen thread, the thread-split path on two.
#include "block_reference.h"
#include "model/blocks.h"
#include "runtime/runtime_policy.h"
#include "test_io.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <QTest>

#include <cmath>
#include <vector>

using namespace moeatlas;
using namespace moeatlas::blockref;
using moeatlas::test::kReorderRtol;

namespace {

constexpr double kFarOutside = 1e-3; // a wrong reference must be 50x the bar away (as tst_blocks)

enum class MlaFault { None, NoMscale, OtherRopeLayout, NoLatentNorm, PerHeadRopeKey, NoCausalMask };

double rel(const at::Tensor& got, const at::Tensor& ref)
{
    if (got.sizes() != ref.sizes())
        return INFINITY;
    const at::Tensor g = got.detach().to(at::kFloat).contiguous(), r = ref.detach().to(at::kFloat).contiguous();
    const std::vector<float> gv(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
    const std::vector<float> rv(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
    return test::relDiff(gv, rv, test::maxAbs(rv));
}

ModelSpec mlaSpec(bool qLora, bool interleave, bool yarn, bool bias)
{
    ModelSpec s;
    s.arch = Architecture::DeepseekV3;
    s.hiddenSize = 48;
    s.numHeads = 4;
    s.numKvHeads = 4;
    s.maxPositionEmbeddings = 256;
    s.rmsNormEps = 1e-5; // not the latent norms' eps (1e-6)
    s.rope.theta = 10000.0;
    MlaSpec& m = s.mla;
    m.qLoraRank = qLora ? 20 : 0;
    m.kvLoraRank = 12;
    m.qkNopeHeadDim = 10;
    m.qkRopeHeadDim = 8;
    m.vHeadDim = 6;
    m.ropeInterleave = interleave;
    m.attentionBias = bias;
    s.headDim = m.qkRopeHeadDim;
    if (yarn) { // cos/sin scaled by mscale(8, 1) / mscale(8, 0.5), the softmax by mscale(8, 0.5)^2
        s.rope.type = "yarn";
        s.rope.factor = 8.0;
        s.rope.originalMaxPositionEmbeddings = 16;
        s.rope.mscale = 1.0;
        s.rope.mscaleAllDim = 0.5;
    }
    return s;
}

LayerWeights mlaWeights(const ModelSpec& s, uint64_t seed)
{
    at::manual_seed(static_cast<int64_t>(seed));
    const MlaSpec& m = s.mla;
    const int64_t H = s.hiddenSize, nh = s.numHeads;
    const auto linear = [&](int64_t out, int64_t in, bool bias, double stddev) {
        return Linear { rnd({ out, in }, stddev), bias ? rnd({ out }, 0.5) : at::Tensor() };
    };
    LayerWeights w;
    if (m.qLoraRank > 0) {
        w.mla.qA = linear(m.qLoraRank, H, m.attentionBias, 0.3);
        w.mla.qANorm = 1.0 + rnd({ m.qLoraRank }, 0.5);
        w.mla.qB = linear(nh * m.qkHeadDim(), m.qLoraRank, false, 0.4);
    } else {
        w.q = linear(nh * m.qkHeadDim(), H, false, 0.3);
    }
    w.mla.kvA = linear(m.kvLoraRank + m.qkRopeHeadDim, H, m.attentionBias, 0.3);
    w.mla.kvANorm = 1.0 + rnd({ m.kvLoraRank }, 0.5);
    w.mla.kvB = linear(nh * (m.qkNopeHeadDim + m.vHeadDim), m.kvLoraRank, false, 0.4);
    w.o = linear(H, nh * m.vHeadDim, m.attentionBias, 0.3);
    return w;
}

// Rotates rows [T, d] (the rope part of one head, or the shared key) by position t mod S with the reference
// tables: pairs (x_2j, x_2j+1) in place when interleaved, (x_j, x_j+d/2) otherwise; times the YaRN scaling.
at::Tensor rotate(const at::Tensor& rows, const ReferenceRope& r, int64_t S, bool interleaved)
{
    const int64_t T = rows.size(0), d = rows.size(1), half = d / 2;
    at::Tensor out = rows.clone();
    auto in = rows.accessor<double, 2>();
    auto o = out.accessor<double, 2>();
    for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < half; ++j) {
            const double angle = static_cast<double>(t % S) * r.invFreq[static_cast<std::size_t>(j)];
            const int64_t a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + half;
            o[t][a] = (in[t][a] * std::cos(angle) - in[t][b] * std::sin(angle)) * r.scaling;
            o[t][b] = (in[t][b] * std::cos(angle) + in[t][a] * std::sin(angle)) * r.scaling;
        }
    return out;
}

at::Tensor referenceMla(
    const ModelSpec& s, const LayerWeights& w, const at::Tensor& x, int64_t numSeqs, MlaFault fault = MlaFault::None)
{
    const MlaSpec& m = s.mla;
    const int64_t T = x.size(0), S = T / numSeqs, nh = s.numHeads;
    const int64_t dn = m.qkNopeHeadDim, dr = m.qkRopeHeadDim, dv = m.vHeadDim, r = m.kvLoraRank;
    const auto project = [&](const at::Tensor& in, const Linear& l) {
        const at::Tensor y = at::matmul(in, dbl(l.weight).t());
        return l.bias.defined() ? y + dbl(l.bias) : y;
    };
    const at::Tensor xd = dbl(x);
    const at::Tensor q = m.qLoraRank > 0
        ? project(referenceRmsNorm(project(xd, w.mla.qA), w.mla.qANorm, 1e-6), w.mla.qB)
        : project(xd, w.q); // [T, nh * (dn + dr)]
    const at::Tensor compressed = project(xd, w.mla.kvA);
    const at::Tensor latent = fault == MlaFault::NoLatentNorm
        ? compressed.narrow(1, 0, r)
        : referenceRmsNorm(compressed.narrow(1, 0, r), w.mla.kvANorm, 1e-6);
    const at::Tensor kv = project(latent, w.mla.kvB); // [T, nh * (dn + dv)]
    const ReferenceRope tables = referenceRopeTables(s, S);
    const bool interleaved = m.ropeInterleave != (fault == MlaFault::OtherRopeLayout);
    const at::Tensor kRope = rotate(compressed.narrow(1, r, dr).contiguous(), tables, S, interleaved);
    double scale = 1.0 / std::sqrt(static_cast<double>(dn + dr));
    if (fault != MlaFault::NoMscale && s.rope.type != "default" && s.rope.mscaleAllDim != 0.0) {
        const double mscale = 0.1 * s.rope.mscaleAllDim * std::log(s.rope.factor) + 1.0;
        scale *= mscale * mscale;
    }
    std::vector<at::Tensor> heads;
    for (int64_t h = 0; h < nh; ++h) {
        const at::Tensor qh = q.narrow(1, h * (dn + dr), dn + dr);
        const at::Tensor kvh = kv.narrow(1, h * (dn + dv), dn + dv);
        const at::Tensor qRope = rotate(qh.narrow(1, dn, dr).contiguous(), tables, S, interleaved);
        // The wrong reference: each head's rotary key from its own slice of the key projection instead.
        const at::Tensor kRopeH = fault == MlaFault::PerHeadRopeKey
            ? rotate(kvh.narrow(1, 0, dr).contiguous(), tables, S, interleaved)
            : kRope;
        const at::Tensor query = at::cat({ qh.narrow(1, 0, dn), qRope }, 1);
        const at::Tensor key = at::cat({ kvh.narrow(1, 0, dn), kRopeH }, 1);
        const at::Tensor value = kvh.narrow(1, dn, dv);
        std::vector<at::Tensor> rows;
        for (int64_t t = 0; t < T; ++t) {
            const int64_t first = (t / S) * S, last = fault == MlaFault::NoCausalMask ? first + S - 1 : t;
            const at::Tensor scores = at::mv(key.narrow(0, first, last - first + 1), query[t]) * scale;
            const at::Tensor e = at::exp(scores - scores.max());
            rows.push_back(at::mv(value.narrow(0, first, last - first + 1).t(), e / e.sum()));
        }
        heads.push_back(at::stack(rows));
    }
    return project(at::cat(heads, 1), w.o);
}

} // namespace

class TstMlaAttention : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void matchesReference_data()
    {
        QTest::addColumn<bool>("qLora");
        QTest::addColumn<bool>("interleave");
        QTest::addColumn<bool>("yarn");
        QTest::addColumn<bool>("bias");
        QTest::addColumn<int>("threads");
        for (const int threads : { 1, 2 }) {
            const char* path = threads == 1 ? "plain" : "split";
            QTest::addRow("q-LoRA, interleaved, YaRN mscale, %s", path) << true << true << true << false << threads;
            QTest::addRow("q_proj, rotate_half, default RoPE, biases, %s", path)
                << false << false << false << true << threads;
            QTest::addRow("q-LoRA, rotate_half, YaRN, biases, %s", path) << true << false << true << true << threads;
        }
    }
    void matchesReference()
    {
        QFETCH(bool, qLora);
        QFETCH(bool, interleave);
        QFETCH(bool, yarn);
        QFETCH(bool, bias);
        QFETCH(int, threads);
        if (threads > 1 && !runtimeInfo().openmp)
            QSKIP("the blocks split their products only with LibTorch's OpenMP runtime");
        const ModelSpec s = mlaSpec(qLora, interleave, yarn, bias);
        const LayerWeights w = mlaWeights(s, 11);
        const int64_t numSeqs = 3, S = 14;
        at::manual_seed(12);
        const at::Tensor x = rnd({ numSeqs * S, s.hiddenSize }, 1.0);
        at::Tensor y;
        {
            const ThreadScope scope(threads, 1);
            const at::NoGradGuard noGrad;
            y = attention(s, w, x, numSeqs, buildRotaryCache(s, S, at::TensorOptions().dtype(at::kFloat)), false);
        }
        QVERIFY(y.sizes() == x.sizes());
        const double err = rel(y, referenceMla(s, w, x, numSeqs));
        qInfo("MLA vs fp64 reference: %.3g of max |ref|", err);
        QVERIFY2(err <= kReorderRtol, qPrintable(QString::number(err)));
        std::vector<std::pair<const char*, MlaFault>> faults { { "other RoPE layout", MlaFault::OtherRopeLayout },
            { "latent not normalised", MlaFault::NoLatentNorm }, { "rotary key per head", MlaFault::PerHeadRopeKey },
            { "no causal mask", MlaFault::NoCausalMask } };
        if (yarn)
            faults.push_back({ "no mscale in the softmax scale", MlaFault::NoMscale });
        for (const auto& [what, fault] : faults) {
            const double far = rel(y, referenceMla(s, w, x, numSeqs, fault));
            QVERIFY2(
                far > kFarOutside, qPrintable(QStringLiteral("%1 only %2 away").arg(QLatin1String(what)).arg(far)));
        }
    }
};

QTEST_GUILESS_MAIN(TstMlaAttention)
#include "tst_mla_attention.moc"
