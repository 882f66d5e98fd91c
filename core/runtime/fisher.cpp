#include "runtime/fisher.h"

#include "model/blocks.h"
#include "model/layer_weights.h"
#include "runtime/fisher_detail.h"
#include "runtime/runtime_policy.h"
#include "util/error.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>

namespace moeatlas {

using namespace fisher_detail;

const char* fisherModeName(FisherMode mode)
{
    switch (mode) {
    case FisherMode::Auto:
        return "auto";
    case FisherMode::Resident:
        return "resident";
    case FisherMode::Streaming:
        return "streaming";
    }
    return "?";
}

namespace {

constexpr uint64_t kF32 = 4;

// One MoE layer's leaves (what gradients are taken of) and its running sums over samples (float64).
struct LayerState {
    int layer = 0;
    at::Tensor mask; // [E, I] ones, requires_grad (mask form), else undefined
    // [G, E, I] float64 sums over samples, undefined when not computed.
    at::Tensor maskSum, weightSum, absSum, activationSum;
    at::Tensor sampleActivation; // [E, I] float64: one sample's sum of |a| (reset per sample)
    at::Tensor expertTokens; // [G, E] int64
    // Weight forms: the routed experts as one leaf per expert and projection (views of the layer's
    // weights), so a sample's gradient reaches only the experts it routes to. Taking gradients of
    // the fused [E, 2I, H] tensor instead makes every expert's select-backward allocate and add a
    // zero tensor of the whole layer (E times the layer's expert bytes per sample and layer).
    RaggedExperts leaves;
};

// Per-expert leaves of a layer's routed experts at full width (views of w.gateUp / w.down).
RaggedExperts expertLeaves(const LayerWeights& w)
{
    RaggedExperts r;
    const int64_t E = w.gateUp.size(0);
    for (int64_t e = 0; e < E; ++e) {
        r.widths.push_back(w.down.size(2));
        r.gateUp.push_back(w.gateUp[e].detach().requires_grad_(true));
        r.down.push_back(w.down[e].detach().requires_grad_(true));
        if (w.gateUpBias.defined()) { // gpt_oss: the biases go along (no gradient of their own)
            r.gateUpBias.push_back(w.gateUpBias[e]);
            r.downBias.push_back(w.downBias[e]);
        }
    }
    return r;
}

void checkInput(const ModelSpec& spec, std::span<const int32_t> tokens, std::span<const int64_t> offsets)
{
    checkOffsets(offsets, static_cast<int64_t>(tokens.size()));
    for (std::size_t i = 0; i < tokens.size(); ++i)
        if (tokens[i] < 0 || tokens[i] >= spec.vocabSize)
            throw InputError("token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i)
                + " is outside the vocabulary [0, " + std::to_string(spec.vocabSize) + ")");
}

std::vector<double> values(const at::Tensor& t)
{
    if (!t.defined())
        return {};
    const at::Tensor c = t.to(at::kDouble).contiguous();
    return { c.data_ptr<double>(), c.data_ptr<double>() + c.numel() };
}

// [G, E, I] sums over samples -> per-group means (divided by each group's sample count).
std::vector<double> groupMeans(const at::Tensor& sum, const at::Tensor& groupSamples)
{
    if (!sum.defined())
        return {};
    return values(sum / groupSamples.to(at::kDouble).view({ -1, 1, 1 }));
}

void clearGrad(const at::Tensor& t)
{
    if (t.defined())
        t.mutable_grad().reset();
}

// --- One decoder layer over one sequence -------------------------------------------------------------

// The executor's decoder layer (runtime/executor.cpp) on one sequence; with `state`, the MoE block
// multiplies by the state's unit mask, adds |a| into its activation sums and counts routed tokens
// for group g. Recorded by autograd whenever an input requires gradients.
at::Tensor layerForward(const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, const RotaryCache& rope,
    LayerState* state, int g)
{
    const bool sliding = spec.layers[static_cast<std::size_t>(w.layer)].slidingWindow;
    const at::Tensor h = x + attention(spec, w, rmsNorm(x, w.inputNorm, spec.rmsNormEps), 1, rope, sliding);
    const at::Tensor hn = rmsNorm(h, w.postAttentionNorm, spec.rmsNormEps);
    if (!w.moe)
        return h + denseMlp(w, hn);
    MoeOptions moe;
    if (state) {
        moe.unitMask = state->mask;
        moe.unitActivationSum = state->sampleActivation;
        if (!state->leaves.empty())
            moe.ragged = &state->leaves;
    }
    RoutingRecord routing;
    at::Tensor out = h + moeForward(spec, w, hn, moe, state ? &routing : nullptr);
    if (state)
        state->expertTokens[g].add_(
            at::bincount(routing.topkIds.reshape({ -1 }).to(at::kLong), {}, w.router.size(0)).to(at::kLong));
    return out;
}

// Adds one sample's squared (and absolute) gradients of a MoE layer into group g's sums, then
// clears the gradients. Experts are reduced one at a time (bounded float64 temporaries).
void addSample(LayerState& s, int g)
{
    const at::NoGradGuard noGrad;
    if (s.mask.defined() && s.mask.grad().defined())
        s.maskSum[g].add_(s.mask.grad().to(at::kDouble).square());
    if (s.activationSum.defined()) {
        s.activationSum[g].add_(s.sampleActivation);
        s.sampleActivation.zero_();
    }
    const RaggedExperts& r = s.leaves;
    for (std::size_t e = 0; e < r.gateUp.size(); ++e) {
        // An expert the sample does not route to has no gradient: it adds 0.
        if (!r.gateUp[e].grad().defined() || !r.down[e].grad().defined()) {
            clearGrad(r.gateUp[e]);
            clearGrad(r.down[e]);
            continue;
        }
        const int64_t I = r.widths[e], H = r.down[e].size(0);
        const at::Tensor gu = r.gateUp[e].grad().to(at::kDouble); // [2I, H], gate rows first
        const at::Tensor gd = r.down[e].grad().to(at::kDouble); // [H, I]
        const at::Tensor gate = gu.narrow(0, 0, I), up = gu.narrow(0, I, I);
        const auto ei = static_cast<int64_t>(e);
        if (s.weightSum.defined())
            s.weightSum[g][ei].add_(gate.square().sum(-1) + up.square().sum(-1) + gd.square().sum(0));
        if (s.absSum.defined())
            s.absSum[g][ei].add_(
                (gate.abs().sum(-1) + up.abs().sum(-1) + gd.abs().sum(0)) / static_cast<double>(3 * H));
        clearGrad(r.gateUp[e]);
        clearGrad(r.down[e]);
    }
    clearGrad(s.mask);
}

// Per-token next-token losses of one sequence and their mean, from the final residual stream.
at::Tensor sequenceLoss(const ModelSpec& spec, const at::Tensor& x, const at::Tensor& norm, const at::Tensor& head,
    const std::vector<int32_t>& ids, at::Tensor& nll)
{
    const int64_t S = static_cast<int64_t>(ids.size());
    const at::Tensor logits = at::linear(rmsNorm(x, norm, spec.rmsNormEps), head).narrow(0, 0, S - 1);
    std::vector<int64_t> next(ids.begin() + 1, ids.end());
    const at::Tensor target = at::tensor(at::ArrayRef<int64_t>(next), at::kLong);
    nll = at::cross_entropy_loss(logits.to(at::kFloat), target, {}, at::Reduction::None);
    return nll.mean();
}

// The run's accumulators and results, shared by both modes.
class FisherRun {
public:
    FisherRun(const ModelSpec& spec, std::span<const int32_t> tokens, std::span<const int64_t> offsets,
        std::vector<int> group, int G, const FisherOptions& options, const ProgressFn& progress, const StopToken* stop)
        : m_spec(spec)
        , m_tokens(tokens)
        , m_offsets(offsets)
        , m_group(std::move(group))
        , m_options(options)
        , m_progress(progress)
        , m_stop(stop)
    {
        const int64_t E = spec.router.numExperts, I = spec.moeIntermediate;
        const auto f64 = at::TensorOptions().dtype(at::kDouble);
        for (const int l : spec.moeLayerIndices()) {
            LayerState s;
            s.layer = l;
            if (options.maskForm) {
                s.mask = at::ones({ E, I }, at::kFloat).requires_grad_(true);
                s.maskSum = at::zeros({ G, E, I }, f64);
            }
            if (options.weightForm)
                s.weightSum = at::zeros({ G, E, I }, f64);
            if (options.gradAbs)
                s.absSum = at::zeros({ G, E, I }, f64);
            if (options.activation) {
                s.activationSum = at::zeros({ G, E, I }, f64);
                s.sampleActivation = at::zeros({ E, I }, f64);
            }
            s.expertTokens = at::zeros({ G, E }, at::kLong);
            m_index[l] = m_states.size();
            m_states.push_back(std::move(s));
        }
        m_result.samples = static_cast<int64_t>(offsets.size()) - 1;
        m_result.groups = G;
        m_result.groupSamples.assign(static_cast<std::size_t>(G), 0);
        m_result.groupTokens.assign(static_cast<std::size_t>(G), 0);
        for (int64_t n = 0; n < m_result.samples; ++n) {
            const auto g = static_cast<std::size_t>(m_group[static_cast<std::size_t>(n)]);
            ++m_result.groupSamples[g];
            m_result.groupTokens[g] += length(n);
        }
        m_result.tokens = static_cast<int64_t>(tokens.size());
        m_result.tokenNll.assign(tokens.size(), std::numeric_limits<float>::quiet_NaN());
        m_result.sampleLoss.assign(static_cast<std::size_t>(m_result.samples), 0.0);
    }

    bool weightGrads() const { return m_options.weightForm || m_options.gradAbs; }
    int64_t begin(int64_t n) const { return m_offsets[static_cast<std::size_t>(n)]; }
    int64_t length(int64_t n) const { return m_offsets[static_cast<std::size_t>(n) + 1] - begin(n); }
    int group(int64_t n) const { return m_group[static_cast<std::size_t>(n)]; }
    std::vector<int32_t> ids(int64_t n) const
    {
        return { m_tokens.begin() + begin(n), m_tokens.begin() + begin(n) + length(n) };
    }
    LayerState& state(int layer) { return m_states[m_index.at(layer)]; }

    const RotaryCache& rope(int64_t S)
    {
        auto it = m_rotary.find(S);
        if (it == m_rotary.end())
            it = m_rotary.emplace(S, buildRotaryCache(m_spec, S, at::TensorOptions().dtype(at::kFloat))).first;
        return it->second;
    }

    // The loss of sample n from its final residual stream; backward from it runs in the caller.
    at::Tensor loss(int64_t n, const at::Tensor& x, const at::Tensor& norm, const at::Tensor& head)
    {
        at::Tensor nll;
        at::Tensor l = sequenceLoss(m_spec, x, norm, head, ids(n), nll);
        m_result.sampleLoss[static_cast<std::size_t>(n)] = l.item<double>();
        const at::Tensor v = nll.detach().contiguous();
        std::copy_n(v.data_ptr<float>(), length(n) - 1, m_result.tokenNll.begin() + begin(n));
        return l;
    }

    void checkStop() const
    {
        if (m_stop && m_stop->stopRequested())
            throw Cancelled();
    }

    void report(const std::string& stage, int64_t done, int64_t total) const
    {
        if (!m_progress)
            return;
        Progress p;
        p.stage = stage;
        p.done = done;
        p.total = total;
        if (!m_progress(p))
            throw Cancelled();
    }

    // The per-layer means (and baselines) once every sample has been added.
    FisherResult finish(const std::map<int, at::Tensor>& magnitude)
    {
        const at::Tensor perGroup = at::tensor(at::ArrayRef<int64_t>(m_result.groupSamples), at::kLong);
        for (const LayerState& s : m_states) {
            FisherLayer out;
            out.layer = s.layer;
            out.numExperts = m_spec.router.numExperts;
            out.intermediate = m_spec.moeIntermediate;
            out.mask = groupMeans(s.maskSum, perGroup);
            out.weight = groupMeans(s.weightSum, perGroup);
            out.gradAbs = groupMeans(s.absSum, perGroup);
            if (s.activationSum.defined())
                out.activation = values(s.activationSum / s.expertTokens.clamp_min(1).to(at::kDouble).unsqueeze(-1));
            const at::Tensor counts = s.expertTokens.contiguous();
            out.expertTokens.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
            if (const auto it = magnitude.find(s.layer); it != magnitude.end())
                out.magnitude = values(it->second);
            m_result.layers.push_back(std::move(out));
        }
        return std::move(m_result);
    }

private:
    const ModelSpec& m_spec;
    std::span<const int32_t> m_tokens;
    std::span<const int64_t> m_offsets;
    std::vector<int> m_group;
    const FisherOptions& m_options;
    const ProgressFn& m_progress;
    const StopToken* m_stop;
    std::vector<LayerState> m_states;
    std::map<int, std::size_t> m_index;
    std::map<int64_t, RotaryCache> m_rotary;
    FisherResult m_result;
};

// Weight magnitude baseline of one MoE layer: [E, I] sum_h Wgate^2 + Wup^2 + Wdown^2 (float64).
at::Tensor magnitudeOf(const LayerWeights& w)
{
    const at::NoGradGuard noGrad;
    const int64_t E = w.gateUp.size(0), I = w.down.size(2);
    at::Tensor out = at::empty({ E, I }, at::kDouble);
    // One expert at a time: the float64 copy of a whole layer would be twice its fp32 size.
    for (int64_t e = 0; e < E; ++e) {
        const at::Tensor gu = w.gateUp[e].to(at::kDouble);
        out[e].copy_(gu.narrow(0, 0, I).square().sum(-1) + gu.narrow(0, I, I).square().sum(-1)
            + w.down[e].to(at::kDouble).square().sum(0));
    }
    return out;
}

// --- Resident mode -----------------------------------------------------------------------------------

void runResident(const Checkpoint& checkpoint, const ModelSpec& spec, int64_t samples, FisherRun& run,
    std::map<int, at::Tensor>& magnitude)
{
    // Every layer loaded once, fp32, on the CPU (no page release: the mapping is read once per tensor
    // anyway). Loaded without recording so the weights are plain leaves.
    const WeightLoader loader(checkpoint, spec, WeightLoadOptions { c10::Device(c10::kCPU), at::kFloat, false });
    std::vector<LayerWeights> weights;
    at::Tensor norm, head;
    {
        const at::NoGradGuard noGrad;
        for (int l = 0; l < spec.numLayers; ++l)
            weights.push_back(loader.loadLayer(l));
        norm = loader.finalNorm();
        head = loader.lmHead();
    }
    for (const LayerWeights& w : weights)
        if (w.moe && run.weightGrads())
            run.state(w.layer).leaves = expertLeaves(w);
    const at::AutoGradMode gradMode(true);
    for (int64_t n = 0; n < samples; ++n) {
        run.checkStop();
        const int g = run.group(n);
        at::Tensor x = loader.embed(run.ids(n));
        const RotaryCache& rope = run.rope(run.length(n));
        for (const LayerWeights& w : weights)
            x = layerForward(spec, w, x, rope, w.moe ? &run.state(w.layer) : nullptr, g);
        run.loss(n, x, norm, head).backward();
        for (const LayerWeights& w : weights)
            if (w.moe)
                addSample(run.state(w.layer), g);
        run.report("sample " + std::to_string(n + 1) + "/" + std::to_string(samples), n + 1, samples);
    }
    for (const LayerWeights& w : weights)
        if (w.moe)
            magnitude[w.layer] = magnitudeOf(w);
}

// --- Streaming mode ----------------------------------------------------------------------------------

// The saved layer inputs of one chunk of samples: per saved layer a [chunkTokens, H] fp32 block, in
// RAM or in an unlinked scratch file (nothing is left behind, whatever happens).
class SavedInputs {
public:
    SavedInputs(int layers, int64_t chunkTokens, int64_t hidden, bool spill, const std::string& scratchDir)
        : m_chunkTokens(chunkTokens)
        , m_hidden(hidden)
    {
        if (!spill) {
            for (int l = 0; l < layers; ++l)
                m_ram.push_back(at::empty({ chunkTokens, hidden }, at::kFloat));
            return;
        }
        std::string path = (std::filesystem::path(scratchDir) / "moeatlas-fisher-XXXXXX").string();
        m_fd = ::mkstemp(path.data());
        if (m_fd < 0)
            throw InputError(scratchDir + ": cannot create the Fisher scratch file (" + std::strerror(errno) + ")");
        ::unlink(path.c_str());
        m_path = scratchDir;
    }
    ~SavedInputs()
    {
        if (m_fd >= 0)
            ::close(m_fd);
    }
    SavedInputs(const SavedInputs&) = delete;
    SavedInputs& operator=(const SavedInputs&) = delete;

    // Rows [row, row + x.size(0)) of saved layer `slot`.
    void put(int slot, int64_t row, const at::Tensor& x)
    {
        if (m_fd < 0) {
            m_ram[static_cast<std::size_t>(slot)].narrow(0, row, x.size(0)).copy_(x);
            return;
        }
        const at::Tensor c = x.contiguous();
        io(true, slot, row, c);
        m_written += static_cast<uint64_t>(c.numel()) * kF32;
    }
    at::Tensor get(int slot, int64_t row, int64_t rows) const
    {
        if (m_fd < 0)
            return m_ram[static_cast<std::size_t>(slot)].narrow(0, row, rows).clone();
        at::Tensor x = at::empty({ rows, m_hidden }, at::kFloat);
        io(false, slot, row, x);
        return x;
    }
    uint64_t bytesWritten() const { return m_written; }

private:
    void io(bool write, int slot, int64_t row, const at::Tensor& x) const
    {
        auto* p = static_cast<char*>(x.data_ptr());
        std::size_t left = static_cast<std::size_t>(x.numel()) * kF32;
        auto offset = static_cast<off_t>(
            (static_cast<uint64_t>(slot) * static_cast<uint64_t>(m_chunkTokens) + static_cast<uint64_t>(row))
            * static_cast<uint64_t>(m_hidden) * kF32);
        while (left > 0) {
            const ssize_t n = write ? ::pwrite(m_fd, p, left, offset) : ::pread(m_fd, p, left, offset);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                throw InputError(m_path + ": Fisher scratch file " + (write ? "write" : "read") + " failed ("
                    + (n < 0 ? std::strerror(errno) : "unexpected end of file") + ")");
            p += n;
            left -= static_cast<std::size_t>(n);
            offset += n;
        }
    }

    int64_t m_chunkTokens;
    int64_t m_hidden;
    std::vector<at::Tensor> m_ram;
    int m_fd = -1;
    std::string m_path;
    uint64_t m_written = 0;
};

// Drops a streamed layer and returns its memory to the system (see Executor::Impl::release).
void releaseLayer(LayerWeights& w)
{
    w = LayerWeights {};
    ::malloc_trim(0);
}

// Per chunk of samples: forward layer by layer saving every MoE-side layer input, the loss and its
// gradient at the head, then the layers in reverse, each reloaded and recomputed from its saved input
// with autograd, back-propagating the stream's gradient one layer at a time. Every per-sample
// gradient is the one the resident mode computes (same operations on the same values and shapes), added
// in the same sample order, so the two modes agree bit for bit when run by the same binary on the same
// machine with the same thread count (the same OpenBLAS and ATen kernels).
uint64_t runStreaming(const Checkpoint& checkpoint, const ModelSpec& spec, const FisherPlan& plan,
    const std::vector<std::pair<int64_t, int64_t>>& chunks, const std::string& scratchDir, FisherRun& run,
    std::map<int, at::Tensor>& magnitude)
{
    const WeightLoader loader(checkpoint, spec, WeightLoadOptions { c10::Device(c10::kCPU), at::kFloat, true });
    const int L = spec.numLayers, H = static_cast<int>(spec.hiddenSize);
    int firstMoe = L;
    for (int l = 0; l < L; ++l)
        if (spec.layers[static_cast<std::size_t>(l)].moe) {
            firstMoe = l;
            break;
        }
    const int64_t samples = chunks.empty() ? 0 : chunks.back().second;
    const int64_t perSample = L + 1 + (L - firstMoe);
    const int64_t total = samples * perSample;
    int64_t done = 0;
    uint64_t spilled = 0;
    // Grad mode stays on (nothing records while no input requires gradients) so every block takes the
    // same plain paths as in the resident mode.
    const at::AutoGradMode gradMode(true);
    for (const auto& [first, last] : chunks) {
        const int64_t chunkBegin = run.begin(first);
        const int64_t chunkTokens = run.begin(last - 1) + run.length(last - 1) - chunkBegin;
        SavedInputs saved(L - firstMoe, chunkTokens, H, plan.spill, scratchDir);
        at::Tensor stream = at::empty({ chunkTokens, H }, at::kFloat); // hidden states, then their gradients
        const auto rows = [&](int64_t n) { return stream.narrow(0, run.begin(n) - chunkBegin, run.length(n)); };
        const auto step = [&](const std::string& what, int64_t n) {
            run.report(what + ", sample " + std::to_string(n + 1) + "/" + std::to_string(samples), ++done, total);
        };

        for (int l = 0; l < L; ++l) {
            LayerWeights w;
            {
                const at::NoGradGuard noGrad;
                w = loader.loadLayer(l);
            }
            for (int64_t n = first; n < last; ++n) {
                run.checkStop();
                at::Tensor x = l == 0 ? loader.embed(run.ids(n)) : rows(n);
                if (l >= firstMoe)
                    saved.put(l - firstMoe, run.begin(n) - chunkBegin, x);
                // The forward pass only moves the stream: without the unit mask of ones (x * 1 == x) and
                // without statistics, which the recomputation below records.
                const at::Tensor y = layerForward(spec, w, x, run.rope(run.length(n)), nullptr, 0);
                rows(n).copy_(y.detach());
                step("forward layer " + std::to_string(l + 1) + "/" + std::to_string(L), n);
            }
            releaseLayer(w);
        }

        {
            at::Tensor norm, head;
            {
                const at::NoGradGuard noGrad;
                norm = loader.finalNorm();
                head = loader.lmHead();
            }
            for (int64_t n = first; n < last; ++n) {
                run.checkStop();
                const at::Tensor x = rows(n).clone().requires_grad_(true);
                run.loss(n, x, norm, head).backward();
                rows(n).copy_(x.grad());
                step("loss", n);
            }
        }
        ::malloc_trim(0);

        for (int l = L - 1; l >= firstMoe; --l) {
            LayerWeights w;
            {
                const at::NoGradGuard noGrad;
                w = loader.loadLayer(l);
            }
            if (w.moe && run.weightGrads())
                run.state(l).leaves = expertLeaves(w);
            for (int64_t n = first; n < last; ++n) {
                run.checkStop();
                const bool needInputGrad = l > firstMoe;
                at::Tensor x = saved.get(l - firstMoe, run.begin(n) - chunkBegin, run.length(n));
                if (needInputGrad)
                    x.requires_grad_(true);
                LayerState* state = w.moe ? &run.state(l) : nullptr;
                const at::Tensor y = layerForward(spec, w, x, run.rope(run.length(n)), state, run.group(n));
                y.backward(rows(n).clone());
                if (state)
                    addSample(*state, run.group(n));
                if (needInputGrad)
                    rows(n).copy_(x.grad());
                step("backward layer " + std::to_string(l + 1) + "/" + std::to_string(L), n);
            }
            if (w.moe && first == 0)
                magnitude[l] = magnitudeOf(w);
            if (w.moe)
                run.state(l).leaves = {};
            releaseLayer(w);
        }
        spilled += saved.bytesWritten();
    }
    return spilled;
}

} // namespace

FisherResult computeFisher(const Checkpoint& checkpoint, const ModelSpec& spec, std::span<const int32_t> tokens,
    std::span<const int64_t> seqOffsets, std::span<const int> sampleGroup, const FisherOptions& options,
    const ProgressFn& progress, const StopToken* stop)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (!options.maskForm && !options.weightForm && !options.gradAbs)
        throw InputError("fisher: no score asked for (mask form, weight form or grad-abs)");
    checkInput(spec, tokens, seqOffsets);
    const int64_t samples = static_cast<int64_t>(seqOffsets.size()) - 1;
    int G = 1;
    std::vector<int> group = sampleGroups(sampleGroup, samples, G);
    const FisherPlan plan = planFisher(checkpoint, spec, seqOffsets, sampleGroup, options);
    // Autograd's ops cannot take the blocks' thread-split paths, so the threads go to the BLAS's GEMMs
    // and ATen runs single-threaded for the pass (thread_pools.h: with both pools active, 6x slower
    // on 2 cores); restored afterwards. (Autograd's large temporaries stay in the heap under the
    // runtime policy the program's main applies: runtime/runtime_policy.h.)
    const ThreadScope threadsOfPass(1, options.threads > 0 ? options.threads : at::get_num_threads());

    FisherRun run(spec, tokens, seqOffsets, std::move(group), G, options, progress, stop);
    std::map<int, at::Tensor> magnitude;
    uint64_t spilled = 0;
    if (plan.mode == FisherMode::Resident)
        runResident(checkpoint, spec, samples, run, magnitude);
    else
        spilled = runStreaming(checkpoint, spec, plan, sampleChunks(seqOffsets, plan.chunkTokens),
            scratchDirectory(options), run, magnitude);
    if (!options.magnitude)
        magnitude.clear();
    FisherResult result = run.finish(magnitude);
    result.plan = plan;
    result.bytesSpilled = spilled;
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return result;
}

} // namespace moeatlas
