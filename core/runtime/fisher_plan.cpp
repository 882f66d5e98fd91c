// The Fisher pass's memory plan (planFisher): resident vs streaming, RAM vs scratch file vs chunks.
// docs/fisher.md, "Resident and streaming modes", has the formulas.
#include "runtime/fisher.h"

#include "checkpoint/tensor_layout.h"
#include "runtime/executor.h"
#include "runtime/fisher_detail.h"
#include "util/error.h"
#include "util/format.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <numeric>

namespace moeatlas {

namespace fisher_detail {

void checkOffsets(std::span<const int64_t> offsets, int64_t T)
{
    if (offsets.size() < 2 || offsets.front() != 0 || offsets.back() != T)
        throw InputError("sequence offsets must start at 0 and end at the token count");
    for (std::size_t i = 0; i + 1 < offsets.size(); ++i)
        if (offsets[i + 1] - offsets[i] < 2)
            throw InputError("sequence " + std::to_string(i)
                + " has fewer than 2 tokens: a causal-LM loss needs at least one predicted token");
}

std::vector<int> sampleGroups(std::span<const int> sampleGroup, int64_t samples, int& groups)
{
    if (sampleGroup.empty()) {
        groups = 1;
        return std::vector<int>(static_cast<std::size_t>(samples), 0);
    }
    if (static_cast<int64_t>(sampleGroup.size()) != samples)
        throw InputError("sample groups: " + std::to_string(sampleGroup.size()) + " entries for "
            + std::to_string(samples) + " sequences");
    groups = 0;
    for (const int g : sampleGroup) {
        if (g < 0)
            throw InputError("sample groups: negative group id " + std::to_string(g));
        groups = std::max(groups, g + 1);
    }
    std::vector<int64_t> count(static_cast<std::size_t>(groups), 0);
    for (const int g : sampleGroup)
        ++count[static_cast<std::size_t>(g)];
    for (int g = 0; g < groups; ++g)
        if (count[static_cast<std::size_t>(g)] == 0)
            throw InputError("sample groups: group " + std::to_string(g) + " has no sequence");
    return { sampleGroup.begin(), sampleGroup.end() };
}

int64_t longestSequence(std::span<const int64_t> offsets)
{
    int64_t longest = 0;
    for (std::size_t i = 0; i + 1 < offsets.size(); ++i)
        longest = std::max(longest, offsets[i + 1] - offsets[i]);
    return longest;
}

std::string scratchDirectory(const FisherOptions& options)
{
    if (!options.scratchDir.empty())
        return options.scratchDir;
    const char* tmp = std::getenv("TMPDIR");
    return tmp && *tmp ? tmp : "/tmp";
}

std::vector<std::pair<int64_t, int64_t>> sampleChunks(std::span<const int64_t> offsets, int64_t chunkTokens)
{
    std::vector<std::pair<int64_t, int64_t>> chunks; // [first, last) sample
    const int64_t samples = static_cast<int64_t>(offsets.size()) - 1;
    int64_t first = 0;
    for (int64_t n = 1; n <= samples; ++n) {
        const bool full = n < samples
            && offsets[static_cast<std::size_t>(n) + 1] - offsets[static_cast<std::size_t>(first)] > chunkTokens;
        if (n == samples || full) {
            chunks.emplace_back(first, n);
            first = n;
        }
    }
    return chunks;
}

} // namespace fisher_detail

namespace {

using namespace fisher_detail;

constexpr uint64_t kF32 = 4;

uint64_t numelOf(const std::vector<int64_t>& shape)
{
    uint64_t n = 1;
    for (const int64_t d : shape)
        n *= static_cast<uint64_t>(d);
    return n;
}

struct PlanInputs {
    uint64_t budget = 0;
    std::vector<uint64_t> layerBytes; // fp32 bytes of every decoder layer
    uint64_t headBytes = 0; // fp32 final norm + output head
    uint64_t expertGradBytes = 0; // fp32 gradients of one MoE layer's routed experts (weight forms)
    uint64_t reductionBytes = 0; // float64 temporaries of the weight-form reductions (one layer at a time)
    uint64_t activationBytes = 0; // autograd's saved activations of one layer for the longest sequence
    uint64_t lossBytes = 0; // logits, log-softmax and their gradient for the longest sequence
    uint64_t streamBytesPerToken = 0; // one residual stream (fp32 hidden) per token
    int firstMoe = 0;
    int layers = 0;
};

PlanInputs planInputs(
    const Checkpoint& checkpoint, const ModelSpec& spec, int64_t longest, const FisherOptions& options)
{
    PlanInputs in;
    in.budget = options.memoryBudgetBytes ? options.memoryBudgetBytes : availableMemoryBytes();
    const TensorLayout layout(checkpoint, spec);
    for (int l = 0; l < spec.numLayers; ++l) {
        uint64_t bytes = 0;
        for (const ExpectedTensor& t : layout.layerTensors(l))
            bytes += numelOf(t.shape) * kF32;
        in.layerBytes.push_back(bytes);
    }
    const uint64_t H = static_cast<uint64_t>(spec.hiddenSize), V = static_cast<uint64_t>(spec.vocabSize);
    const uint64_t E = static_cast<uint64_t>(spec.router.numExperts), I = static_cast<uint64_t>(spec.moeIntermediate);
    const uint64_t K = static_cast<uint64_t>(spec.router.topK), S = static_cast<uint64_t>(longest);
    // MLA (deepseek_v3): the widest of a head's query/key and value.
    const uint64_t nh = static_cast<uint64_t>(spec.numHeads);
    const uint64_t hd
        = static_cast<uint64_t>(spec.mla.enabled() ? std::max(spec.mla.qkHeadDim(), spec.mla.vHeadDim) : spec.headDim);
    in.headBytes = (V + 1) * H * kF32;
    if (options.weightForm || options.gradAbs) {
        in.expertGradBytes = E * 3 * I * H * kF32;
        in.reductionBytes = 3 * I * H * 8 * 2; // one expert's float64 gradients and their squares
    }
    // Saved by autograd per layer and sequence (fp32): norms, projections and rotary terms of the
    // attention (~12 H + 8 heads x head_dim per token), its scores and probabilities (3 nh S^2), and
    // per routed slot the gathered input, gate/up and activation rows (2 H + 6 I), with a margin of 1.5.
    uint64_t dense = static_cast<uint64_t>(spec.sharedIntermediate);
    for (const LayerSpec& l : spec.layers)
        dense = std::max(dense, static_cast<uint64_t>(l.moe ? 0 : l.denseIntermediate));
    in.activationBytes = kF32 * (S * (12 * H + 8 * nh * hd + E + 6 * dense) + 3 * nh * S * S + S * K * (2 * H + 6 * I));
    in.activationBytes += in.activationBytes / 2;
    in.lossBytes = 3 * S * V * kF32;
    in.streamBytesPerToken = H * kF32;
    in.firstMoe = spec.numLayers;
    for (int l = 0; l < spec.numLayers; ++l)
        if (spec.layers[static_cast<std::size_t>(l)].moe) {
            in.firstMoe = l;
            break;
        }
    in.layers = spec.numLayers;
    return in;
}

uint64_t residentPeak(const PlanInputs& in, int moeLayers)
{
    const uint64_t weights = std::accumulate(in.layerBytes.begin(), in.layerBytes.end(), uint64_t { 0 });
    return weights + in.headBytes + static_cast<uint64_t>(in.layers) * in.activationBytes + in.lossBytes
        + static_cast<uint64_t>(moeLayers) * in.expertGradBytes + in.reductionBytes;
}

// Peak of a streaming run holding `chunkTokens` tokens' residual streams: one layer with its
// gradients and activations (or the head during the loss), the current stream (hidden states, then
// their gradients) and, unless spilled, every saved layer input of the chunk.
uint64_t streamingPeak(const PlanInputs& in, int64_t chunkTokens, bool spill, int64_t longest)
{
    const uint64_t maxLayer = *std::max_element(in.layerBytes.begin(), in.layerBytes.end());
    const uint64_t compute
        = std::max(maxLayer + in.expertGradBytes + in.reductionBytes + in.activationBytes, in.headBytes + in.lossBytes);
    const uint64_t saved = static_cast<uint64_t>(in.layers - in.firstMoe);
    const uint64_t stream = static_cast<uint64_t>(chunkTokens) * in.streamBytesPerToken;
    // Spilled: one sequence's saved input is read back at a time.
    return compute + stream + (spill ? static_cast<uint64_t>(longest) * in.streamBytesPerToken : saved * stream);
}

uint64_t freeDiskBytes(const std::string& dir)
{
    struct statvfs st { };
    if (::statvfs(dir.c_str(), &st) != 0)
        return 0;
    return static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
}

} // namespace

FisherPlan planFisher(const Checkpoint& checkpoint, const ModelSpec& spec, std::span<const int64_t> seqOffsets,
    std::span<const int> sampleGroup, const FisherOptions& options)
{
    if (seqOffsets.empty())
        throw InputError("sequence offsets must start at 0 and end at the token count");
    checkOffsets(seqOffsets, seqOffsets.back());
    int G = 1;
    (void)sampleGroups(sampleGroup, static_cast<int64_t>(seqOffsets.size()) - 1, G);
    if (spec.numMoeLayers() == 0)
        throw InputError("fisher: the model has no MoE layer");
    if (spec.ragged())
        throw InputError(
            "fisher: the checkpoint's routed experts have their own widths (config.json "
            "moeatlas_expert_widths, a ragged export); compute Fisher on the checkpoint it was exported from");
    const int64_t T = seqOffsets.back(), longest = longestSequence(seqOffsets);
    const PlanInputs in = planInputs(checkpoint, spec, longest, options);
    FisherPlan plan;
    plan.budgetBytes = in.budget;
    plan.residentBytes = residentPeak(in, spec.numMoeLayers());
    const auto fits = [&](uint64_t bytes) { return in.budget == 0 || bytes <= in.budget; };
    if (options.mode == FisherMode::Resident || (options.mode == FisherMode::Auto && fits(plan.residentBytes))) {
        if (!fits(plan.residentBytes))
            throw RequestError("mode",
                "fisher memory plan: the resident mode needs about " + formatBytes(plan.residentBytes)
                    + " (every layer in fp32, one sequence's activations of every layer) but only "
                    + formatBytes(in.budget) + " are available; use the streaming mode");
        plan.mode = FisherMode::Resident;
        plan.peakBytes = plan.residentBytes;
        plan.chunkTokens = T;
        return plan;
    }
    plan.mode = FisherMode::Streaming;
    const std::string scratch = scratchDirectory(options);
    const uint64_t savedLayers = static_cast<uint64_t>(in.layers - in.firstMoe);
    const auto spillBytes
        = [&](int64_t tokens) { return savedLayers * static_cast<uint64_t>(tokens) * in.streamBytesPerToken; };
    int64_t chunk = options.chunkTokens > 0 ? std::max(options.chunkTokens, longest) : T;
    chunk = std::min(chunk, T);
    if (fits(streamingPeak(in, chunk, false, longest))) {
        plan.spill = false;
    } else if (fits(streamingPeak(in, chunk, true, longest))) {
        // A scratch directory the user named must exist; the default one ($TMPDIR, /tmp) may be missing,
        // and then the samples are split into chunks that fit in memory instead.
        std::error_code ec;
        const bool isDir = std::filesystem::is_directory(scratch, ec);
        if (!isDir && !options.scratchDir.empty())
            throw InputError("scratch directory " + scratch + ": not a directory (the saved layer inputs of "
                + formatBytes(spillBytes(chunk)) + " do not fit in memory)");
        if (isDir && freeDiskBytes(scratch) >= spillBytes(chunk) + (uint64_t { 64 } << 20)) {
            plan.spill = true;
            plan.spillBytes = spillBytes(chunk);
        }
    }
    if (!plan.spill && !fits(streamingPeak(in, chunk, false, longest))) {
        // Smaller chunks held in RAM: each reads every layer from the first MoE layer up twice.
        if (options.chunkTokens > 0 || !fits(streamingPeak(in, longest, false, longest))) {
            const uint64_t need = streamingPeak(in, options.chunkTokens > 0 ? chunk : longest, false, longest);
            throw RequestError("memoryBudgetBytes",
                "fisher memory plan: streaming needs about " + formatBytes(need)
                    + " (one layer in fp32 with its gradients, one sequence's activations, the saved layer "
                      "inputs of "
                    + std::to_string(options.chunkTokens > 0 ? chunk : longest) + " tokens) but only "
                    + formatBytes(in.budget) + " are available, and the saved inputs cannot go to a scratch file in "
                    + scratch
                    + " (no such directory, no room, or not even that fits); use shorter sequences or free memory");
        }
        const uint64_t perToken = (savedLayers + 1) * in.streamBytesPerToken;
        const uint64_t base = streamingPeak(in, 0, false, longest);
        chunk = std::max<int64_t>(longest, static_cast<int64_t>((in.budget - base) / perToken));
    }
    plan.chunkTokens = chunk;
    plan.chunks = static_cast<int>(sampleChunks(seqOffsets, chunk).size());
    plan.peakBytes = streamingPeak(in, chunk, plan.spill, longest);
    return plan;
}

} // namespace moeatlas
