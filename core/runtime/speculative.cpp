#include "runtime/speculative.h"

#include "util/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace moeatlas {

namespace {

at::Tensor deviceFloats(const std::vector<float>& values, int64_t rows, int64_t cols, const at::TensorOptions& to)
{
    return at::from_blob(const_cast<float*>(values.data()), { rows, cols }, at::kFloat)
        .to(to.device(), at::kFloat, false, /*copy=*/true);
}

} // namespace

SpeculativeRunner::SpeculativeRunner(const ModelSpec& spec, const SpeculativeExecution& options,
    const std::string& variant, int64_t numTokens, const at::TensorOptions& compute, bool keepIds)
    : m_spec(spec)
    , m_options(options)
    , m_tokens(numTokens)
    , m_compute(compute)
    , m_keepIds(keepIds)
    , m_moeLayers(spec.moeLayerIndices())
{
    const std::string where = "variant '" + variant + "', speculative '" + options.name() + "'";
    const auto fail = [&](const std::string& what) { throw RequestError("speculative", where + ": " + what); };
    const int L = static_cast<int>(m_moeLayers.size());
    if (options.lookahead < 1 || options.lookahead >= L) {
        std::string layers;
        for (const int l : m_moeLayers)
            layers += (layers.empty() ? "" : ", ") + std::to_string(l);
        fail("lookahead " + std::to_string(options.lookahead) + " is "
            + (options.lookahead < 1 ? "not a positive count of MoE layers" : "beyond the last MoE layer")
            + " (MoE layers: " + layers + "; a lookahead from 1 to " + std::to_string(L - 1)
            + " leaves a layer to speculate)");
    }
    const int64_t E = spec.router.numExperts, H = spec.hiddenSize;
    const Predictor p = options.predictor;
    for (int m = 0; m < L; ++m) {
        const int layer = m_moeLayers[static_cast<std::size_t>(m)];
        const bool isSource = m + options.lookahead < L, isTarget = m >= options.lookahead;
        const std::string at = "MoE layer " + std::to_string(layer);
        if (isTarget && p == Predictor::Frequency) {
            const auto it = options.frequencyOrder.find(layer);
            if (it == options.frequencyOrder.end())
                fail("no expert frequency order for " + at);
            std::vector<int32_t> sorted = it->second;
            std::sort(sorted.begin(), sorted.end());
            bool permutation = static_cast<int64_t>(sorted.size()) == E;
            for (std::size_t e = 0; permutation && e < sorted.size(); ++e)
                permutation = sorted[e] == static_cast<int32_t>(e);
            if (!permutation)
                fail("the expert frequency order of " + at + " is not an order of its " + std::to_string(E)
                    + " experts");
            // A score per expert that ranks it by its position in the order (first: highest).
            std::vector<float> score(static_cast<std::size_t>(E));
            for (std::size_t i = 0; i < it->second.size(); ++i)
                score[static_cast<std::size_t>(it->second[i])] = static_cast<float>(E - static_cast<int64_t>(i));
            m_frequency[layer] = deviceFloats(score, 1, E, compute).squeeze(0);
        }
        if (isSource && p == Predictor::QuasiHidden) {
            const auto it = options.defaultVectors.find(layer);
            if (it == options.defaultVectors.end() || static_cast<int64_t>(it->second.size()) != E * H)
                fail("no default vectors [" + std::to_string(E) + ", " + std::to_string(H) + "] for " + at);
            m_defaultVectors[layer] = deviceFloats(it->second, E, H, compute);
        }
        if (isSource && (p == Predictor::Linear || p == Predictor::Mlp)) {
            const auto it = options.estimators.find(layer);
            if (it == options.estimators.end())
                fail("no " + predictorName(p) + " estimator for " + at + " at lookahead "
                    + std::to_string(options.lookahead));
            TrainedEstimator model = fromAtlas(
                it->second, p == Predictor::Linear ? EstimatorKind::Linear : EstimatorKind::Mlp, where + ", " + at);
            if (model.inputSize() != H || model.numExperts() != E)
                fail("the estimator of " + at + " maps " + std::to_string(model.inputSize()) + " features to "
                    + std::to_string(model.numExperts()) + " experts; the model has " + std::to_string(H) + " and "
                    + std::to_string(E));
            for (at::Tensor* t :
                { &model.featureMean, &model.featureStd, &model.weight, &model.bias, &model.outWeight, &model.outBias })
                if (t->defined())
                    *t = t->to(compute.device());
            m_estimators.emplace(layer, std::move(model));
        }
    }
}

std::pair<at::Tensor, at::Tensor> SpeculativeRunner::ownRouting(
    const LayerWeights& w, const at::Tensor& hn, const MoeOptions& moe) const
{
    at::Tensor logits = routerLogits(w, hn);
    if (moe.keptExperts.defined())
        logits = logits.masked_fill(moe.keptExperts.logical_not(), -INFINITY);
    auto [weights, ids] = at::topk(at::softmax(logits, -1, at::kFloat), m_spec.router.topK, -1);
    if (m_spec.router.normTopkProb)
        weights = weights / weights.sum(-1, /*keepdim=*/true);
    return { ids, weights };
}

at::Tensor SpeculativeRunner::topKept(const at::Tensor& scores, const MoeOptions& moe) const
{
    at::Tensor s = scores.to(at::kFloat);
    if (moe.keptExperts.defined())
        s = s.masked_fill(moe.keptExperts.logical_not(), -INFINITY);
    // Stable descending sort: equal scores keep the ascending expert order.
    const at::Tensor order = std::get<1>(s.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
    return order.narrow(1, 0, m_spec.router.topK).contiguous();
}

at::Tensor SpeculativeRunner::decoderLayer(const LayerWeights& w, const at::Tensor& x, int64_t tokenBegin,
    int64_t numSeqs, int64_t seqLen, const RotaryCache& rope, bool sliding, const MoeOptions& moe)
{
    // As the executor's decoder layer: attention, the pre-MoE norm, the MoE block (or the dense MLP).
    const at::Tensor h = x + attention(m_spec, w, rmsNorm(x, w.inputNorm, m_spec.rmsNormEps), numSeqs, rope, sliding);
    const at::Tensor hn = rmsNorm(h, w.postAttentionNorm, m_spec.rmsNormEps);
    if (!w.moe)
        return h + denseMlp(w, hn);
    const int64_t n = numSeqs * seqLen, K = m_spec.router.topK;
    const int moeIndex
        = static_cast<int>(std::find(m_moeLayers.begin(), m_moeLayers.end(), w.layer) - m_moeLayers.begin());
    const Predictor p = m_options.predictor;
    MoeOptions options = moe;
    if (moeIndex >= m_options.lookahead) {
        const Source& source = m_sources.front(); // moeIndex - lookahead (checked in endLayer)
        const at::Tensor state = source.state.narrow(0, tokenBegin, n);
        const int sourceLayer = m_moeLayers[static_cast<std::size_t>(source.moeIndex)];
        switch (p) {
        case Predictor::NextRouter:
        case Predictor::QuasiHidden:
            options.speculativeLogits = routerLogits(w, rmsNorm(state, w.postAttentionNorm, m_spec.rmsNormEps));
            break;
        case Predictor::Linear:
        case Predictor::Mlp:
            options.speculativeIds = topKept(estimatorLogits(m_estimators.at(sourceLayer), state), moe);
            break;
        case Predictor::Frequency:
            options.speculativeIds = topKept(m_frequency.at(w.layer).unsqueeze(0).expand({ n, -1 }), moe);
            break;
        case Predictor::Previous: {
            // The previous token's own routing at this layer; a sequence's first token has none to go by and
            // keeps its own.
            const at::Tensor own = ownRouting(w, hn, moe).first.view({ numSeqs, seqLen, K });
            options.speculativeIds
                = at::cat({ own.narrow(1, 0, 1), own.narrow(1, 0, seqLen - 1) }, 1).reshape({ n, K });
            break;
        }
        case Predictor::Oracle:
            options.speculativeIds = ownRouting(w, hn, moe).first;
            break;
        }
        if (m_keepIds) {
            // The experts the tokens run: the ids given, or the top-k of the predicted logits as moeForward takes it.
            at::Tensor ran = options.speculativeIds;
            if (!ran.defined()) {
                at::Tensor logits = options.speculativeLogits;
                if (moe.keptExperts.defined())
                    logits = logits.masked_fill(moe.keptExperts.logical_not(), -INFINITY);
                ran = std::get<1>(at::topk(at::softmax(logits, -1, at::kFloat), K, -1));
            }
            std::vector<int32_t>& ids = m_speculated[w.layer];
            ids.resize(static_cast<std::size_t>(m_tokens * K));
            const at::Tensor cpu = ran.to(at::kCPU, at::kInt).contiguous();
            std::copy_n(cpu.data_ptr<int32_t>(), n * K, ids.begin() + tokenBegin * K);
        }
    }
    // The state this layer leaves for the layers after it.
    if (moeIndex + m_options.lookahead < static_cast<int>(m_moeLayers.size())) {
        if (!m_current.state.defined()) {
            m_current.moeIndex = moeIndex;
            m_current.state = at::empty({ m_tokens, m_spec.hiddenSize }, m_compute);
        }
        at::Tensor rows = m_current.state.narrow(0, tokenBegin, n);
        if (p == Predictor::QuasiHidden) {
            // q_l = h_l + sum over the token's own routed slots of w * DV_l[e], in fp32, then the compute dtype.
            const auto [ids, weights] = ownRouting(w, hn, moe);
            const at::Tensor dv = m_defaultVectors.at(w.layer);
            const at::Tensor mixed
                = (weights.unsqueeze(-1) * dv.index_select(0, ids.reshape({ -1 })).view({ n, K, -1 })).sum(1);
            rows.copy_(h.to(at::kFloat) + mixed);
        } else if (p == Predictor::Linear || p == Predictor::Mlp) {
            rows.copy_(hn);
        } else {
            rows.copy_(h);
        }
    }
    return h + moeForward(m_spec, w, hn, options, nullptr);
}

void SpeculativeRunner::endLayer(int layer)
{
    const auto it = std::find(m_moeLayers.begin(), m_moeLayers.end(), layer);
    if (it == m_moeLayers.end())
        return;
    const int moeIndex = static_cast<int>(it - m_moeLayers.begin());
    if (moeIndex >= m_options.lookahead)
        m_sources.pop_front();
    if (m_current.state.defined())
        m_sources.push_back(std::move(m_current));
    m_current = Source {};
    const int next = moeIndex + 1;
    if (next < static_cast<int>(m_moeLayers.size()) && next >= m_options.lookahead
        && (m_sources.empty() || m_sources.front().moeIndex != next - m_options.lookahead))
        throw std::logic_error("speculative execution: the held source layers are out of step");
}

} // namespace moeatlas
