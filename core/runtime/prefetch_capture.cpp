#include "runtime/prefetch_capture.h"

#include "atlas/atlas_file.h"
#include "runtime/prefetch_estimator.h"
#include "util/error.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

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
    const bool quasi = m_options.has(Predictor::QuasiHidden), learned = m_options.learned();
    const int64_t H = spec.hiddenSize;
    for (std::size_t i = 0; i < start.layers.size(); ++i) {
        const auto at = std::find(m_moeLayers.begin(), m_moeLayers.end(), start.layers[i]);
        const auto expected = static_cast<std::size_t>(numTokens * H);
        if (at == m_moeLayers.end() || start.hidden.at(i).size() != expected
            || (quasi && start.quasi.at(i).size() != expected) || (learned && start.features.at(i).size() != expected))
            throw InputError("resume state: the expert-prefetch state of layer " + std::to_string(start.layers[i])
                + " does not fit this run (" + std::to_string(numTokens) + " tokens x " + std::to_string(H) + ")");
        Source s;
        s.layer = start.layers[i];
        s.moeIndex = static_cast<int>(at - m_moeLayers.begin());
        s.hidden = fromFloats(start.hidden[i], numTokens, H, compute);
        if (quasi)
            s.quasi = fromFloats(start.quasi[i], numTokens, H, compute);
        if (learned)
            s.features = fromFloats(start.features[i], numTokens, H, compute);
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
    const uint64_t states = 1 + (options.has(Predictor::QuasiHidden) ? 1 : 0) + (options.learned() ? 1 : 0);
    const auto rows = static_cast<uint64_t>(std::min(rowsPerChunk, numTokens));
    return (D + 1) * T * H * elementSize * states // held layers and the current one
        + D * T * H * 4 * states // their fp32 copies in a resume snapshot
        + T * K * 12 + T // the current layer's ids and weights, the split
        + E * H * 8 * 3 // default-vector sums and their means
        + rows * (H * (elementSize + 4) * 2 + E * 4 * 3 + K * H * 4 + static_cast<uint64_t>(options.budget) * 8)
        // one estimator's training: fp32 features of every token, the multi-hot targets and a minibatch
        + (options.learned() ? T * (H + E + static_cast<uint64_t>(options.budget)) * 4 * 2 : 0);
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
            if (p == Predictor::NextRouter || p == Predictor::QuasiHidden)
                predict(w, source, p, p == Predictor::QuasiHidden ? source.quasi : source.hidden, observer, stop);
    }
    // This layer as a source for the layers after it.
    m_layer = w.layer;
    m_current = Source {};
    m_current.layer = w.layer;
    m_current.moeIndex = moeIndex;
    const int64_t H = m_spec.hiddenSize, K = m_spec.router.topK;
    m_current.hidden = at::empty({ m_tokens, H }, m_compute);
    if (m_options.learned())
        m_current.features = at::empty({ m_tokens, H }, m_compute);
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

void PrefetchRecorder::afterBatch(
    int64_t tokenBegin, const at::Tensor& postAttention, const at::Tensor& moeInput, const RoutingRecord& record)
{
    if (m_layer < 0)
        return;
    const int64_t n = postAttention.size(0);
    m_current.hidden.narrow(0, tokenBegin, n).copy_(postAttention);
    if (m_current.features.defined())
        m_current.features.narrow(0, tokenBegin, n).copy_(moeInput);
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

void PrefetchRecorder::endLayer(int layer, ExecutionObserver& observer, bool snapshot, const StopToken* stop)
{
    if (!enabled())
        return;
    if (m_layer >= 0)
        endMoeLayer(observer, stop);
    if (!snapshot)
        return;
    PrefetchState state;
    for (const Source& s : m_sources) {
        state.layers.push_back(s.layer);
        state.hidden.push_back(toFloats(s.hidden));
        state.quasi.push_back(s.quasi.defined() ? toFloats(s.quasi) : std::vector<float> {});
        state.features.push_back(s.features.defined() ? toFloats(s.features) : std::vector<float> {});
    }
    observer.onPrefetchState(layer, std::move(state));
}

void PrefetchRecorder::trainLearned(
    const Source& source, int lookahead, ExecutionObserver& observer, const StopToken* stop)
{
    // The executor runs in inference mode; training needs autograd, and tensors made in inference mode cannot
    // enter it: leave the mode and work on normal copies.
    const c10::InferenceMode training(false);
    const at::Tensor features = source.features.clone();
    const at::Tensor targets = m_ids.to(m_compute.device()).clone();
    const at::Tensor trainMask = m_trainTokens.clone();
    for (const Predictor p : m_options.predictors) {
        if (p != Predictor::Linear && p != Predictor::Mlp)
            continue;
        EstimatorOptions o; // the defaults of docs/methods.md, "Learned expert estimators"
        o.kind = p == Predictor::Linear ? EstimatorKind::Linear : EstimatorKind::Mlp;
        const TrainedEstimator model = trainEstimator(features, targets, m_spec.router.numExperts, trainMask, o, stop);
        const at::Tensor ids = predictTopB(model, features, m_options.budget).contiguous();
        PrefetchBlock block;
        block.predictor = p;
        block.layer = source.layer;
        block.lookahead = lookahead;
        block.targetLayer = m_layer;
        block.tokenBegin = 0;
        block.numTokens = m_tokens;
        block.budget = m_options.budget;
        block.ids = ids.data_ptr<int32_t>();
        observer.onPrefetchBlock(block);
        observer.onLearnedEstimator(p, source.layer, lookahead, toAtlas(model));
    }
}

void PrefetchRecorder::endMoeLayer(ExecutionObserver& observer, const StopToken* stop)
{
    if (m_options.has(Predictor::QuasiHidden))
        formQuasiHidden(m_current, observer);
    // Learned estimators: every token of target j = m_layer is routed (m_ids); each held source l = j - d has
    // its normed MoE input. Trained on the training split, predicting every token.
    if (m_options.learned())
        for (const Source& source : m_sources) {
            const int d = m_current.moeIndex - source.moeIndex;
            if (d >= 1 && d <= m_options.maxLookahead)
                trainLearned(source, d, observer, stop);
        }
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
