#include "runtime/executor.h"

#include "model/blocks.h"
#include "model/layer_weights.h"
#include "runtime/prefetch_capture.h"
#include "runtime/runtime_policy.h"
#include "runtime/speculative.h"
#include "runtime/thread_pools.h"
#include "runtime/variant_layers.h"
#include "util/error.h"
#include "util/format.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <malloc.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <fstream>
#include <future>
#include <limits>
#include <map>

namespace moeatlas {

namespace {

c10::ScalarType parseComputeDtype(const std::string& name)
{
    if (name == "float32" || name == "fp32")
        return at::kFloat;
    if (name == "bfloat16" || name == "bf16")
        return at::kBFloat16;
    if (name == "float16" || name == "fp16")
        return at::kHalf;
    throw RequestError("computeDtype", "'" + name + "' is not a compute dtype (expected float32, bfloat16 or float16)");
}

c10::Device parseDevice(const std::string& name)
{
    if (name == "cpu")
        return c10::Device(c10::kCPU);
    if (name.rfind("cuda", 0) == 0) {
        if (!cudaAvailable())
            throw RequestError("device",
                "cannot run on '" + name
                    + "': this build of LibTorch has no usable CUDA device "
                      "(build with a CUDA-enabled LibTorch via Torch_DIR, and check nvidia-smi)");
        int index = 0;
        if (name.size() > 4) {
            const std::string digits = name.substr(std::min<std::size_t>(5, name.size()));
            const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
            if (name[4] != ':' || digits.empty() || ec != std::errc() || end != digits.data() + digits.size()
                || index < 0)
                throw RequestError(
                    "device", "'" + name + "' is not a device (expected cpu, cuda or cuda:N with N a device index)");
        }
        return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
    }
    throw RequestError("device", "'" + name + "' is not a device (expected cpu, cuda or cuda:N)");
}

} // namespace

uint64_t availableMemoryBytes()
{
    std::ifstream in("/proc/meminfo");
    std::string key;
    uint64_t value = 0;
    std::string unit;
    while (in >> key >> value >> unit) {
        if (key == "MemAvailable:")
            return value * 1024;
    }
    return 0;
}

namespace {

// A micro-batch: consecutive sequences of equal length.
struct MicroBatch {
    int64_t tokenBegin = 0;
    int64_t numSeqs = 0;
    int64_t seqLen = 0;
    int64_t tokens() const { return numSeqs * seqLen; }
};

std::vector<MicroBatch> planMicroBatches(std::span<const int64_t> offsets, int64_t batchTokens)
{
    std::vector<MicroBatch> out;
    for (std::size_t i = 0; i + 1 < offsets.size(); ++i) {
        const int64_t len = offsets[i + 1] - offsets[i];
        if (len <= 0)
            throw InputError("sequence " + std::to_string(i) + " is empty");
        if (!out.empty() && out.back().seqLen == len && out.back().tokens() + len <= batchTokens) {
            ++out.back().numSeqs;
            continue;
        }
        out.push_back({ offsets[i], 1, len });
    }
    return out;
}

// One decoder layer over one micro-batch: the residual stream after the layer. `moeInput`
// receives the MoE block's input (the post-attention norm) when not null, `postAttention` the residual
// stream after attention (before that norm).
at::Tensor decoderLayer(const ModelSpec& s, const LayerWeights& w, const at::Tensor& x, const MicroBatch& b,
    const RotaryCache& rope, bool sliding, const MoeOptions& moe, RoutingRecord* record, at::Tensor* moeInput,
    at::Tensor* postAttention = nullptr)
{
    at::Tensor h = x + attention(s, w, rmsNorm(x, w.inputNorm, s.rmsNormEps), b.numSeqs, rope, sliding);
    if (postAttention)
        *postAttention = h;
    at::Tensor hn = rmsNorm(h, w.postAttentionNorm, s.rmsNormEps);
    h = h + (w.moe ? moeForward(s, w, hn, moe, record) : denseMlp(w, hn));
    if (moeInput)
        *moeInput = hn;
    return h;
}

void checkOffsets(std::span<const int64_t> seqOffsets, int64_t numTokens)
{
    if (seqOffsets.size() < 2 || seqOffsets.front() != 0 || seqOffsets.back() != numTokens)
        throw InputError("sequence offsets must start at 0 and end at the token count");
}

int64_t longestOf(const std::vector<MicroBatch>& batches)
{
    int64_t longest = 0;
    for (const MicroBatch& b : batches)
        longest = std::max(longest, b.seqLen);
    return longest;
}

std::map<int64_t, RotaryCache> rotaryCaches(
    const ModelSpec& s, const std::vector<MicroBatch>& batches, const at::TensorOptions& opts)
{
    std::map<int64_t, RotaryCache> rotary;
    for (const MicroBatch& b : batches)
        if (!rotary.count(b.seqLen))
            rotary.emplace(b.seqLen, buildRotaryCache(s, b.seqLen, opts));
    return rotary;
}

// Rows of the output head whose fp32 logits fit in about 256 MiB (at least one).
int64_t headRowsPerChunk(const ModelSpec& s, int64_t batchTokens)
{
    const int64_t fit = std::max<int64_t>(1, (int64_t { 256 } << 20) / (s.vocabSize * 4));
    return std::min(batchTokens, fit);
}

// Makes ATen's parallel regions started from the calling thread run on that thread alone (OpenMP's
// thread count is per thread; at::set_num_threads would also change the process-wide default).
void useOneIntraOpThreadHere()
{
    (void)at::get_num_threads(); // LibTorch's lazy per-thread initialisation first
    setOpenmpThreadsOfThisThread(1);
}

} // namespace

bool cudaAvailable()
{
    return at::hasCUDA();
}

struct Executor::Impl {
    // ExecutorOptions::threads for the executor's lifetime (first in, last out). One thread is how
    // layers are copied out of the checkpoint's mapping (layerOnOneThread).
    ThreadScope threads;
    const Checkpoint& ckpt;
    const ModelSpec& spec;
    ExecutorOptions options;
    c10::Device device;
    c10::ScalarType dtype;
    WeightLoader loader;
    std::map<int, LayerWeights> resident;

    Impl(const Checkpoint& c, const ModelSpec& s, ExecutorOptions o)
        : threads(o.threads, 0)
        , ckpt(c)
        , spec(s)
        , options(std::move(o))
        , device(parseDevice(options.device))
        , dtype(parseComputeDtype(options.computeDtype))
        , loader(c, s, WeightLoadOptions { device, dtype, !options.keepWeightsResident })
    {
        if (options.batchTokens <= 0)
            throw RequestError(
                "batchTokens", std::to_string(options.batchTokens) + " tokens per micro-batch (expected a count > 0)");
    }

    const LayerWeights& layer(int l, LayerWeights& scratch)
    {
        if (!options.keepWeightsResident) {
            scratch = loader.loadLayer(l);
            return scratch;
        }
        auto it = resident.find(l);
        if (it == resident.end() && prefetchLayer == l) {
            prefetchLayer = -1;
            it = resident.emplace(l, prefetched.get()).first;
        }
        if (it == resident.end())
            it = resident.emplace(l, loader.loadLayer(l)).first;
        return it->second;
    }

    // With resident weights, layer l is loaded on a background thread (one intra-op thread) while the
    // layer before it runs: it stays in memory anyway, so the overlap costs nothing beyond the
    // resident plan. (Streaming runs do not prefetch: that would hold two layers at once.)
    std::future<LayerWeights> prefetched;
    int prefetchLayer = -1;

    void startPrefetch(int l)
    {
        if (!options.keepWeightsResident || !device.is_cpu() || l >= spec.numLayers || prefetchLayer >= 0
            || resident.count(l))
            return;
        prefetchLayer = l;
        prefetched = std::async(std::launch::async, [this, l] {
            const c10::InferenceMode inferenceMode;
            useOneIntraOpThreadHere();
            return loader.loadLayer(l);
        });
    }

    // Refuses a run whose planned peak exceeds the memory budget, before any work.
    uint64_t memoryBudget() const
    {
        return options.memoryBudgetBytes ? options.memoryBudgetBytes : availableMemoryBytes();
    }

    void checkMemoryPlan(uint64_t planned, int64_t numTokens, int residualStreams) const
    {
        const uint64_t budget = memoryBudget();
        if (budget == 0 || planned <= budget)
            return;
        const uint64_t hiddenBytes = static_cast<uint64_t>(numTokens * spec.hiddenSize) * c10::elementSize(dtype)
            * static_cast<uint64_t>(residualStreams);
        throw RequestError("memoryBudgetBytes",
            "memory plan: " + std::to_string(numTokens) + " tokens"
                + (residualStreams > 1 ? " x " + std::to_string(residualStreams) + " variants" : std::string())
                + " need about " + formatBytes(planned) + " (hidden states " + formatBytes(hiddenBytes)
                + " + one layer + activations) but only " + formatBytes(budget)
                + " are available; use fewer or shorter sequences, or fewer tokens per micro-batch");
    }

    // LayerWeights of layer l, loaded on one intra-op thread: with several, each small copy is a
    // parallel region whose threads fault pages of the same mapping at once and then wait for each
    // other (benchmark model, 2 cores: 0.25 s per layer on one thread, 0.6-0.8 s on two).
    const LayerWeights& layerOnOneThread(int l, LayerWeights& scratch)
    {
        const ThreadScope oneThread(1, 0);
        return layer(l, scratch);
    }

    // Drops a streamed layer and returns its memory to the system.
    void release(LayerWeights& scratch) const
    {
        // glibc keeps freed mid-sized blocks in its heap; without this a streamed layer's buffers
        // stay resident while the next layer loads (measured: +200 MiB peak RSS on a 3.2 GiB model).
        if (!options.keepWeightsResident) {
            scratch = LayerWeights {};
            ::malloc_trim(0);
        }
    }
};

Executor::Executor(const Checkpoint& checkpoint, const ModelSpec& spec, ExecutorOptions options)
    : m_impl(std::make_unique<Impl>(checkpoint, spec, std::move(options)))
{
}

Executor::~Executor() = default;

std::string Executor::deviceName() const
{
    return m_impl->device.str();
}

void Executor::checkRunMemory(std::span<const int64_t> seqOffsets) const
{
    const int64_t T = seqOffsets.empty() ? 0 : seqOffsets.back();
    const std::vector<MicroBatch> batches = planMicroBatches(seqOffsets, m_impl->options.batchTokens);
    m_impl->checkMemoryPlan(plannedPeakBytes(T, longestOf(batches)), T, 1);
}

uint64_t Executor::plannedPeakBytes(int64_t numTokens, int64_t longestSequence) const
{
    uint64_t peak = plannedForwardBytes(numTokens, longestSequence);
    if (m_impl->options.computeLogits) {
        const ModelSpec& s = m_impl->spec;
        peak += static_cast<uint64_t>(numTokens) * static_cast<uint64_t>(s.vocabSize) * 4
            + static_cast<uint64_t>(s.vocabSize) * static_cast<uint64_t>(s.hiddenSize)
                * c10::elementSize(m_impl->dtype);
    }
    return peak;
}

uint64_t Executor::plannedForwardBytes(int64_t numTokens, int64_t longestSequence) const
{
    const ModelSpec& s = m_impl->spec;
    const uint64_t es = c10::elementSize(m_impl->dtype);
    // A layer occupies its values in the compute dtype, whatever the checkpoint stores (FP8 and MXFP4 weights
    // decode to more bytes than they map).
    uint64_t maxLayer = 0;
    for (int l = 0; l < s.numLayers; ++l)
        maxLayer = std::max(maxLayer, m_impl->loader.layout().layerValues(l) * es);
    const uint64_t H = static_cast<uint64_t>(s.hiddenSize);
    const uint64_t T = static_cast<uint64_t>(numTokens);
    const uint64_t B = static_cast<uint64_t>(std::min<int64_t>(m_impl->options.batchTokens, numTokens));
    const uint64_t K = static_cast<uint64_t>(s.router.topK), I = static_cast<uint64_t>(s.moeIntermediate);
    const uint64_t S = static_cast<uint64_t>(longestSequence);
    uint64_t peak = T * H * es // residual stream
        + maxLayer // one layer of weights
        + B * es * (10 * H + K * (4 * I + 2 * H)) // micro-batch activations
        + static_cast<uint64_t>(s.numHeads) * S * S * 8 // one sequence's scores
        + PrefetchRecorder::plannedBytes(s, m_impl->options.prefetch, numTokens, m_impl->options.batchTokens, es);
    if (m_impl->options.keepWeightsResident)
        peak += maxLayer * static_cast<uint64_t>(s.numLayers - 1);
    return peak;
}

ExecutionResult Executor::run(std::span<const int32_t> tokens, std::span<const int64_t> seqOffsets,
    ExecutionObserver& observer, const ExecutionStart& start, const ProgressFn& progress, const StopToken* stop)
{
    Impl& d = *m_impl;
    const ModelSpec& s = d.spec;
    const auto t0 = std::chrono::steady_clock::now();
    c10::InferenceMode inferenceMode;
    // The BLAS single-threaded; the blocks split their products across ATen's threads (thread_pools.h).
    const ThreadScope blasGuard(0, d.device.is_cpu() && at::get_num_threads() > 1 ? 1 : 0);
    const int64_t T = static_cast<int64_t>(tokens.size());
    const int64_t H = s.hiddenSize;
    checkOffsets(seqOffsets, T);
    checkRunMemory(seqOffsets);
    const std::vector<MicroBatch> batches = planMicroBatches(seqOffsets, d.options.batchTokens);

    const at::TensorOptions opts = at::TensorOptions().dtype(d.dtype).device(d.device);
    at::Tensor hidden;
    if (start.firstLayer > 0) {
        if (static_cast<int64_t>(start.hidden.size()) != T * H)
            throw InputError("resume state holds " + std::to_string(start.hidden.size()) + " values, expected "
                + std::to_string(T * H));
        hidden = at::from_blob(const_cast<float*>(start.hidden.data()), { T, H }, at::kFloat).to(d.device, d.dtype);
    } else {
        hidden = d.loader.embed(std::vector<int32_t>(tokens.begin(), tokens.end()));
    }

    const std::map<int64_t, RotaryCache> rotary = rotaryCaches(s, batches, opts);

    std::vector<int64_t> samples = d.options.hiddenSampleTokens;
    std::sort(samples.begin(), samples.end());

    ExecutionResult result;
    const int layersToRun = s.numLayers - start.firstLayer;
    const int64_t totalWork = static_cast<int64_t>(layersToRun) * T;
    MoeOptions moeOptions;
    moeOptions.recordExpertNorms = d.options.recordExpertNorms;
    // Expert prefetching (runtime/prefetch_capture.h); inert when not asked for.
    PrefetchRecorder prefetch(s, d.options.prefetch, T, d.options.batchTokens, opts, start.prefetch);

    for (int l = start.firstLayer; l < s.numLayers; ++l) {
        LayerWeights scratch;
        const LayerWeights& w = d.layerOnOneThread(l, scratch);
        d.startPrefetch(l + 1);
        prefetch.beginLayer(w, observer, stop);
        result.peakLayerBytes = std::max(result.peakLayerBytes, w.sourceBytes);
        const bool sliding = s.layers[static_cast<std::size_t>(l)].slidingWindow;
        int64_t doneInLayer = 0;
        for (const MicroBatch& b : batches) {
            if (stop && stop->stopRequested())
                throw Cancelled();
            at::Tensor x = hidden.narrow(0, b.tokenBegin, b.tokens());
            RoutingRecord rec;
            at::Tensor hn, post;
            MoeOptions batchMoe = moeOptions;
            prefetch.prepareBatch(batchMoe, b.tokenBegin, b.tokens());
            const at::Tensor h = decoderLayer(s, w, x, b, rotary.at(b.seqLen), sliding, batchMoe,
                w.moe ? &rec : nullptr, &hn, prefetch.enabled() ? &post : nullptr);
            if (w.moe) {
                prefetch.afterBatch(b.tokenBegin, post, hn, rec);
                RouterBlock block;
                block.layer = l;
                block.tokenBegin = b.tokenBegin;
                block.numTokens = b.tokens();
                block.numExperts = s.router.numExperts;
                block.topK = s.router.topK;
                block.logits = rec.logits.data_ptr<float>();
                block.topkIds = rec.topkIds.data_ptr<int32_t>();
                block.topkWeights = rec.topkWeights.data_ptr<float>();
                block.expertNorms = rec.expertNorms.defined() ? rec.expertNorms.data_ptr<float>() : nullptr;
                observer.onRouterBlock(block);
            }
            // Hidden-state samples (the MoE block's input) that fall into this micro-batch.
            auto lo = std::lower_bound(samples.begin(), samples.end(), b.tokenBegin);
            auto hi = std::lower_bound(lo, samples.end(), b.tokenBegin + b.tokens());
            if (w.moe && lo != hi) {
                std::vector<int64_t> idx(lo, hi);
                std::vector<int64_t> local(idx.size());
                std::transform(idx.begin(), idx.end(), local.begin(), [&](int64_t t) { return t - b.tokenBegin; });
                at::Tensor rows = hn.index_select(0, at::tensor(local, at::kLong).to(d.device))
                                      .to(at::kCPU, at::kFloat)
                                      .contiguous();
                observer.onHiddenSamples(l, idx, { rows.data_ptr<float>(), static_cast<std::size_t>(rows.numel()) });
            }
            x.copy_(h);
            doneInLayer += b.tokens();
            if (progress) {
                Progress p;
                p.stage = "layer " + std::to_string(l + 1) + "/" + std::to_string(s.numLayers);
                p.done = static_cast<int64_t>(l - start.firstLayer) * T + doneInLayer;
                p.total = totalWork;
                if (!progress(p))
                    throw Cancelled();
            }
        }
        prefetch.endLayer(l, observer, observer.wantsHiddenSnapshots(), stop);
        if (observer.wantsHiddenSnapshots()) {
            at::Tensor snap = hidden.to(at::kCPU, at::kFloat).contiguous();
            observer.onLayerComplete(l, { snap.data_ptr<float>(), static_cast<std::size_t>(snap.numel()) });
        } else {
            observer.onLayerComplete(l, {});
        }
        d.release(scratch);
    }

    if (d.options.computeLogits) {
        const at::Tensor norm = d.loader.finalNorm();
        const at::Tensor head = d.loader.lmHead();
        at::Tensor logits = at::empty({ T, s.vocabSize }, at::kFloat);
        for (int64_t b = 0; b < T; b += d.options.batchTokens) {
            const int64_t n = std::min(d.options.batchTokens, T - b);
            at::Tensor hn = rmsNorm(hidden.narrow(0, b, n), norm, s.rmsNormEps);
            logits.narrow(0, b, n).copy_(at::linear(hn, head).to(at::kCPU, at::kFloat));
        }
        result.logits.assign(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return result;
}

uint64_t Executor::plannedEvaluationBytes(
    int64_t numTokens, int64_t longestSequence, int numVariants, bool keepLogits, bool dimensionPlans) const
{
    const ModelSpec& s = m_impl->spec;
    const uint64_t es = c10::elementSize(m_impl->dtype);
    const uint64_t T = static_cast<uint64_t>(numTokens), V = static_cast<uint64_t>(s.vocabSize);
    const uint64_t extraStreams = static_cast<uint64_t>(std::max(numVariants, 1) - 1);
    const uint64_t headRows = static_cast<uint64_t>(headRowsPerChunk(s, m_impl->options.batchTokens));
    uint64_t peak = plannedForwardBytes(numTokens, longestSequence)
        + extraStreams * T * static_cast<uint64_t>(s.hiddenSize) * es // one residual stream per variant
        + V * static_cast<uint64_t>(s.hiddenSize) * es // output head
        + headRows * V * 4 * 3; // one chunk of fp32 logits, log-sum-exp and its temporaries
    if (keepLogits)
        peak += static_cast<uint64_t>(std::max(numVariants, 1)) * T * V * 4;
    if (dimensionPlans && !m_impl->options.maskedUnits && !s.moeLayerIndices().empty())
        peak += static_cast<uint64_t>(s.router.numExperts) * 3 * static_cast<uint64_t>(s.moeIntermediate)
            * static_cast<uint64_t>(s.hiddenSize) * es; // the sliced experts of one layer, at most full size
    return peak;
}

int Executor::variantsThatFit(int64_t numTokens, int64_t longestSequence, bool keepLogits, bool dimensionPlans) const
{
    const uint64_t budget = m_impl->memoryBudget();
    const uint64_t one = plannedEvaluationBytes(numTokens, longestSequence, 1, keepLogits, dimensionPlans);
    if (budget == 0)
        return std::numeric_limits<int>::max();
    if (one > budget)
        return 0;
    const uint64_t each = plannedEvaluationBytes(numTokens, longestSequence, 2, keepLogits, dimensionPlans) - one;
    return static_cast<int>(std::min<uint64_t>((budget - one) / std::max<uint64_t>(each, 1) + 1, 1 << 20));
}

EvaluationResult Executor::evaluate(std::span<const int32_t> tokens, std::span<const int64_t> seqOffsets,
    std::span<const ExpertMask> variants, bool keepLogits, const ProgressFn& progress, const StopToken* stop)
{
    Impl& d = *m_impl;
    const ModelSpec& s = d.spec;
    const auto t0 = std::chrono::steady_clock::now();
    c10::InferenceMode inferenceMode;
    // The BLAS single-threaded; the blocks split their products across ATen's threads (thread_pools.h).
    const ThreadScope blasGuard(0, d.device.is_cpu() && at::get_num_threads() > 1 ? 1 : 0);
    const int64_t T = static_cast<int64_t>(tokens.size());
    const int P = static_cast<int>(variants.size());
    if (P == 0)
        throw InputError("evaluation: no model variant to evaluate");
    checkOffsets(seqOffsets, T);
    const std::vector<MicroBatch> batches = planMicroBatches(seqOffsets, d.options.batchTokens);
    const bool dimensionPlans
        = std::any_of(variants.begin(), variants.end(), [](const ExpertMask& m) { return !m.units.empty(); });
    // Speculative variants hold the states of their last `lookahead` MoE layers: one residual stream each.
    int heldStates = 0;
    for (const ExpertMask& m : variants)
        heldStates += m.speculative ? SpeculativeRunner::heldStates(*m.speculative) : 0;
    d.checkMemoryPlan(
        plannedEvaluationBytes(T, longestOf(batches), P + heldStates, keepLogits, dimensionPlans), T, P + heldStates);

    // Router masks and unit lists of every variant, validated before any work.
    const std::vector<VariantLayers> prepared = prepareVariants(s, variants, d.options.maskedUnits, d.device, d.dtype);

    const at::TensorOptions opts = at::TensorOptions().dtype(d.dtype).device(d.device);
    std::vector<std::unique_ptr<SpeculativeRunner>> speculative(static_cast<std::size_t>(P));
    for (int v = 0; v < P; ++v) {
        const ExpertMask& m = variants[static_cast<std::size_t>(v)];
        if (!m.speculative)
            continue;
        if (!m.routing.isModel())
            throw RequestError("speculative",
                "variant '" + m.name + "': speculative execution runs the model's own top-k, not routing '"
                    + m.routing.name() + "'");
        speculative[static_cast<std::size_t>(v)]
            = std::make_unique<SpeculativeRunner>(s, *m.speculative, m.name, T, opts, keepLogits);
    }
    const at::Tensor embedded = d.loader.embed(std::vector<int32_t>(tokens.begin(), tokens.end()));
    std::vector<at::Tensor> hidden(static_cast<std::size_t>(P));
    for (int v = 0; v < P; ++v)
        hidden[static_cast<std::size_t>(v)] = v + 1 < P ? embedded.clone() : embedded;
    const std::map<int64_t, RotaryCache> rotary = rotaryCaches(s, batches, opts);

    EvaluationResult result;
    result.variants.resize(static_cast<std::size_t>(P));
    const std::vector<int> moeLayers = s.moeLayerIndices();
    for (VariantOutput& out : result.variants)
        out.expertsUsed.assign(moeLayers.size() * static_cast<std::size_t>(T), 0);
    const int64_t totalWork = static_cast<int64_t>(s.numLayers) * T * P;
    int64_t done = 0;
    for (int l = 0; l < s.numLayers; ++l) {
        LayerWeights scratch;
        const LayerWeights& w = d.layerOnOneThread(l, scratch);
        d.startPrefetch(l + 1);
        result.peakLayerBytes = std::max(result.peakLayerBytes, w.sourceBytes);
        const bool sliding = s.layers[static_cast<std::size_t>(l)].slidingWindow;
        for (int v = 0; v < P; ++v) {
            MoeOptions moeOptions;
            const VariantLayers& pv = prepared[static_cast<std::size_t>(v)];
            if (const auto it = pv.keptExperts.find(l); it != pv.keptExperts.end())
                moeOptions.keptExperts = it->second;
            if (const auto it = pv.unitMask.find(l); it != pv.unitMask.end())
                moeOptions.unitMask = it->second;
            // The variant's experts of this layer cut to their kept units, dropped after its batches.
            // On one intra-op thread, as loading: the row gathers are copies that two threads under
            // load did 3-10x slower than one (0.2-0.5 s vs 0.03-0.07 s for a 64 x 3 MiB layer).
            RaggedExperts ragged;
            if (const auto it = pv.unitLists.find(l); it != pv.unitLists.end()) {
                const ThreadScope oneThread(1, 0);
                ragged = sliceExperts(w, it->second);
                moeOptions.ragged = &ragged;
            }
            const ExpertMask& variant = variants[static_cast<std::size_t>(v)];
            moeOptions.routing = &variant.routing;
            if (const auto it = variant.routing.thresholds.find(l); it != variant.routing.thresholds.end())
                moeOptions.threshold = it->second;
            // Experts used per token: this layer's row of the variant's [numMoeLayers, T] counts.
            const auto moeIndex = std::find(moeLayers.begin(), moeLayers.end(), l) - moeLayers.begin();
            uint16_t* used = result.variants[static_cast<std::size_t>(v)].expertsUsed.data() + moeIndex * T;
            at::Tensor usedBlock;
            moeOptions.expertsUsed = w.moe ? &usedBlock : nullptr;
            for (const MicroBatch& b : batches) {
                if (stop && stop->stopRequested())
                    throw Cancelled();
                at::Tensor x = hidden[static_cast<std::size_t>(v)].narrow(0, b.tokenBegin, b.tokens());
                if (SpeculativeRunner* runner = speculative[static_cast<std::size_t>(v)].get())
                    x.copy_(runner->decoderLayer(
                        w, x, b.tokenBegin, b.numSeqs, b.seqLen, rotary.at(b.seqLen), sliding, moeOptions));
                else
                    x.copy_(decoderLayer(s, w, x, b, rotary.at(b.seqLen), sliding, moeOptions, nullptr, nullptr));
                if (w.moe) {
                    const int64_t* k = usedBlock.data_ptr<int64_t>();
                    for (int64_t t = 0; t < b.tokens(); ++t)
                        used[b.tokenBegin + t] = static_cast<uint16_t>(k[t]);
                }
                done += b.tokens();
                if (progress) {
                    Progress p;
                    p.stage = "layer " + std::to_string(l + 1) + "/" + std::to_string(s.numLayers) + ", variant "
                        + std::to_string(v + 1) + "/" + std::to_string(P);
                    p.done = done;
                    p.total = totalWork;
                    if (!progress(p))
                        throw Cancelled();
                }
            }
            if (SpeculativeRunner* runner = speculative[static_cast<std::size_t>(v)].get())
                runner->endLayer(l);
        }
        d.release(scratch);
    }
    for (int v = 0; v < P; ++v)
        if (SpeculativeRunner* runner = speculative[static_cast<std::size_t>(v)].get())
            result.variants[static_cast<std::size_t>(v)].speculatedIds = runner->takeSpeculatedIds();

    // Targets: the next token of the same sequence, -1 at each sequence's last token.
    std::vector<int64_t> next(static_cast<std::size_t>(T), -1);
    for (std::size_t i = 0; i + 1 < seqOffsets.size(); ++i)
        for (int64_t t = seqOffsets[i]; t + 1 < seqOffsets[i + 1]; ++t)
            next[static_cast<std::size_t>(t)] = tokens[static_cast<std::size_t>(t + 1)];
    const at::Tensor target = at::tensor(at::ArrayRef<int64_t>(next), at::kLong);
    const at::Tensor norm = d.loader.finalNorm();
    const at::Tensor head = d.loader.lmHead();
    const int64_t rows = headRowsPerChunk(s, d.options.batchTokens);
    for (int v = 0; v < P; ++v) {
        VariantOutput& out = result.variants[static_cast<std::size_t>(v)];
        out.tokenNll.resize(static_cast<std::size_t>(T));
        if (keepLogits)
            out.logits.resize(static_cast<std::size_t>(T * s.vocabSize));
        for (int64_t b = 0; b < T; b += rows) {
            if (stop && stop->stopRequested())
                throw Cancelled();
            const int64_t n = std::min(rows, T - b);
            const at::Tensor hn = rmsNorm(hidden[static_cast<std::size_t>(v)].narrow(0, b, n), norm, s.rmsNormEps);
            const at::Tensor logits = at::linear(hn, head).to(at::kCPU, at::kFloat).contiguous();
            const at::Tensor tgt = target.narrow(0, b, n);
            // -log softmax(logits)[target] = logsumexp(logits) - logits[target], as cross-entropy computes it.
            at::Tensor nll = at::logsumexp(logits, { 1 }) - logits.gather(1, tgt.clamp_min(0).unsqueeze(1)).squeeze(1);
            nll.masked_fill_(tgt.lt(0), std::numeric_limits<float>::quiet_NaN());
            std::copy_n(nll.contiguous().data_ptr<float>(), n, out.tokenNll.begin() + b);
            if (keepLogits)
                std::copy_n(logits.data_ptr<float>(), n * s.vocabSize, out.logits.begin() + b * s.vocabSize);
        }
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return result;
}

} // namespace moeatlas
