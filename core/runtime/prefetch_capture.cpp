#include "runtime/prefetch_capture.h"

#include "util/error.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace moeatlas {

namespace {

at::Tensor fromFloats(const std::vector<float>& values, int64_t rows, int64_t cols, const at::TensorOptions& to)
{
    return at::from_blob(const_cast<float*>(values.data()), { rows, cols }, at::kFloat)
        .to(to.device(), to.dtype().toScalarType(), false, /*copy=*/true);
}

std::vector<float> toFloats(const at::Tensor& t)
{
    const at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
    return { c.data_ptr<float>(), c.data_ptr<float>() + c.numel() };
}

} // namespace

PrefetchRecorder::PrefetchRecorder(const ModelSpec& spec, const PrefetchOptions& options, int64_t numTokens,
    int64_t rowsPerChunk, const at::TensorOptions& compute, const PrefetchState& start)
    : m_spec(spec)
    , m_options(options)
    , m_tokens(numTokens)
    , m_rowsPerChunk(std::max<int64_t>(1, rowsPerChunk))
    , m_compute(compute)
    , m_moeLayers(spec.moeLayerIndices())
{
    if (!enabled())
        return;
    if (static_cast<int64_t>(m_options.trainTokens.size()) != numTokens)
        throw InputError("expert prefetching: a training split of " + std::to_string(m_options.trainTokens.size())
            + " tokens for a run of " + std::to_string(numTokens));
    m_trainTokens = at::tensor(at::ArrayRef<uint8_t>(m_options.trainTokens), at::kByte).to(compute.device()).gt(0);
    const bool quasi = m_options.has(Predictor::QuasiHidden);
    const int64_t H = spec.hiddenSize;
    for (std::size_t i = 0; i < start.layers.size(); ++i) {
        const auto at = std::find(m_moeLayers.begin(), m_moeLayers.end(), start.layers[i]);
        const auto expected = static_cast<std::size_t>(numTokens * H);
        if (at == m_moeLayers.end() || start.hidden.at(i).size() != expected
            || (quasi && start.quasi.at(i).size() != expected))
            throw InputError("resume state: the expert-prefetch state of layer " + std::to_string(start.layers[i])
                + " does not fit this run (" + std::to_string(numTokens) + " tokens x " + std::to_string(H) + ")");
        Source s;
        s.layer = start.layers[i];
        s.moeIndex = static_cast<int>(at - m_moeLayers.begin());
        s.hidden = fromFloats(start.hidden[i], numTokens, H, compute);
        if (quasi)
            s.quasi = fromFloats(start.quasi[i], numTokens, H, compute);
        m_sources.push_back(std::move(s));
    }
}

uint64_t PrefetchRecorder::plannedBytes(const ModelSpec& spec, const PrefetchOptions& options, int64_t numTokens,
    int64_t rowsPerChunk, uint64_t elementSize)
{
    if (!options.enabled())
        return 0;
    const auto T = static_cast<uint64_t>(numTokens), H = static_cast<uint64_t>(spec.hiddenSize);
    const auto E = static_cast<uint64_t>(spec.router.numExperts), K = static_cast<uint64_t>(spec.router.topK);
    const auto D = static_cast<uint64_t>(options.maxLookahead);
    const uint64_t states = options.has(Predictor::QuasiHidden) ? 2 : 1;
    const auto rows = static_cast<uint64_t>(std::min(rowsPerChunk, numTokens));
    return (D + 1) * T * H * elementSize * states // held layers and the current one
        + D * T * H * 4 * states // their fp32 copies in a resume snapshot
        + T * K * 12 + T // the current layer's ids and weights, the split
        + E * H * 8 * 3 // default-vector sums and their means
        + rows * (H * (elementSize + 4) * 2 + E * 4 * 3 + K * H * 4 + static_cast<uint64_t>(options.budget) * 8);
}

void PrefetchRecorder::beginLayer(const LayerWeights& w, ExecutionObserver& observer, const StopToken* stop)
{
    m_layer = -1;
    if (!enabled() || !w.moe)
        return;
    const auto at = std::find(m_moeLayers.begin(), m_moeLayers.end(), w.layer);
    const int moeIndex = static_cast<int>(at - m_moeLayers.begin());
    // Predictions for this layer from every held source within the lookahead (nearest source last).
    for (const Source& source : m_sources) {
        const int d = moeIndex - source.moeIndex;
        if (d < 1 || d > m_options.maxLookahead)
            continue;
        for (const Predictor p : m_options.predictors)
            predict(w, source, p, p == Predictor::QuasiHidden ? source.quasi : source.hidden, observer, stop);
    }
    // This layer as a source for the layers after it.
    m_layer = w.layer;
    m_current = Source {};
    m_current.layer = w.layer;
    m_current.moeIndex = moeIndex;
    const int64_t H = m_spec.hiddenSize, K = m_spec.router.topK;
    m_current.hidden = at::empty({ m_tokens, H }, m_compute);
    m_ids = at::empty({ m_tokens, K }, at::kLong);
    m_weights = at::empty({ m_tokens, K }, at::kFloat);
    if (m_options.has(Predictor::QuasiHidden))
        m_outputSum = at::zeros({ m_spec.router.numExperts, H }, m_compute.dtype(at::kDouble));
}

void PrefetchRecorder::predict(const LayerWeights& w, const Source& source, Predictor predictor,
    const at::Tensor& states, ExecutionObserver& observer, const StopToken* stop) const
{
    const int64_t B = m_options.budget;
    for (int64_t r0 = 0; r0 < m_tokens; r0 += m_rowsPerChunk) {
        if (stop && stop->stopRequested())
            throw Cancelled();
        const int64_t n = std::min(m_rowsPerChunk, m_tokens - r0);
        // As layer j routes its own tokens: its pre-MoE norm, its router (routerLogits), the fp32 softmax, top-B.
        const at::Tensor hn = rmsNorm(states.narrow(0, r0, n), w.postAttentionNorm, m_spec.rmsNormEps);
        const at::Tensor probs = at::softmax(routerLogits(w, hn), -1, at::kFloat);
        const at::Tensor ids = std::get<1>(at::topk(probs, B, -1)).to(at::kCPU, at::kInt).contiguous();
        PrefetchBlock block;
        block.predictor = predictor;
        block.layer = source.layer;
        block.lookahead
            = static_cast<int>(std::find(m_moeLayers.begin(), m_moeLayers.end(), w.layer) - m_moeLayers.begin())
            - source.moeIndex;
        block.targetLayer = w.layer;
        block.tokenBegin = r0;
        block.numTokens = n;
        block.budget = static_cast<int>(B);
        block.ids = ids.data_ptr<int32_t>();
        observer.onPrefetchBlock(block);
    }
}

void PrefetchRecorder::prepareBatch(MoeOptions& moe, int64_t tokenBegin, int64_t numTokens) const
{
    if (m_layer < 0 || !m_outputSum.defined())
        return;
    moe.expertOutputSum = m_outputSum;
    moe.expertOutputTokens = m_trainTokens.narrow(0, tokenBegin, numTokens);
}

void PrefetchRecorder::afterBatch(int64_t tokenBegin, const at::Tensor& postAttention, const RoutingRecord& record)
{
    if (m_layer < 0)
        return;
    const int64_t n = postAttention.size(0);
    m_current.hidden.narrow(0, tokenBegin, n).copy_(postAttention);
    m_ids.narrow(0, tokenBegin, n).copy_(record.topkIds);
    m_weights.narrow(0, tokenBegin, n).copy_(record.topkWeights);
}

void PrefetchRecorder::formQuasiHidden(Source& source, ExecutionObserver& observer)
{
    const int64_t E = m_spec.router.numExperts, K = m_spec.router.topK, H = m_spec.hiddenSize;
    // DV_l[e]: the mean output of expert e over the training tokens routed to it (0 where none was).
    std::vector<int64_t> counts(static_cast<std::size_t>(E), 0);
    const int64_t* ids = m_ids.data_ptr<int64_t>();
    for (int64_t t = 0; t < m_tokens; ++t)
        if (m_options.trainTokens[static_cast<std::size_t>(t)])
            for (int64_t k = 0; k < K; ++k)
                ++counts[static_cast<std::size_t>(ids[t * K + k])];
    const at::Tensor count = at::tensor(at::ArrayRef<int64_t>(counts), at::kLong).to(m_compute.device());
    const at::Tensor dv = (m_outputSum / count.clamp_min(1).to(at::kDouble).unsqueeze(1)).to(at::kFloat);
    observer.onDefaultVectors(source.layer, toFloats(dv), counts);
    // q_l = h_l + sum over the token's routed slots of w * DV_l[e], in fp32, then in the compute dtype.
    source.quasi = at::empty({ m_tokens, H }, m_compute);
    for (int64_t r0 = 0; r0 < m_tokens; r0 += m_rowsPerChunk) {
        const int64_t n = std::min(m_rowsPerChunk, m_tokens - r0);
        const at::Tensor slotIds = m_ids.narrow(0, r0, n).reshape({ -1 }).to(m_compute.device());
        const at::Tensor w = m_weights.narrow(0, r0, n).to(m_compute.device()).unsqueeze(-1);
        const at::Tensor mixed = (w * dv.index_select(0, slotIds).view({ n, K, H })).sum(1);
        source.quasi.narrow(0, r0, n).copy_(source.hidden.narrow(0, r0, n).to(at::kFloat) + mixed);
    }
}

void PrefetchRecorder::endLayer(int layer, ExecutionObserver& observer, bool snapshot)
{
    if (!enabled())
        return;
    if (m_layer >= 0)
        endMoeLayer(observer);
    if (!snapshot)
        return;
    PrefetchState state;
    for (const Source& s : m_sources) {
        state.layers.push_back(s.layer);
        state.hidden.push_back(toFloats(s.hidden));
        state.quasi.push_back(s.quasi.defined() ? toFloats(s.quasi) : std::vector<float> {});
    }
    observer.onPrefetchState(layer, std::move(state));
}

void PrefetchRecorder::endMoeLayer(ExecutionObserver& observer)
{
    if (m_options.has(Predictor::QuasiHidden))
        formQuasiHidden(m_current, observer);
    // ==== Integration point: learned estimators (linear, mlp) ======================================
    // Here every token of MoE layer j = m_layer has been routed (m_ids, [T, k]), and m_sources holds each
    // source l = j - d (d = 1..maxLookahead) with h_l. An estimator trained on (features of l, targets of j) --
    // features: layer l's MoE input after its pre-MoE norm (rmsNorm(h_l, norm2_l), which would be kept per
    // source from afterBatch's MoE input), targets: m_ids, on the training split m_trainTokens -- would write
    // its [T, budget] predictions for (l, d) through observer.onPrefetchBlock and its parameters with them.
    // Not wired yet: capture refuses linear and mlp (runtime/capture.cpp, validatePrefetch).
    m_sources.push_back(std::move(m_current));
    m_current = Source {};
    m_ids = at::Tensor();
    m_weights = at::Tensor();
    m_outputSum = at::Tensor();
    const int newest = m_sources.back().moeIndex;
    while (m_sources.front().moeIndex <= newest - m_options.maxLookahead)
        m_sources.pop_front();
    m_layer = -1;
}

} // namespace moeatlas
