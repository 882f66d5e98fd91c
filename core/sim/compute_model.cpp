#include "sim/compute_model.h"

#include "util/error.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace moeatlas {

namespace {

std::string lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

std::optional<DType> parseAnyDtype(const std::string& text)
{
    const std::string t = lower(text);
    if (t == "bfloat16" || t == "bf16")
        return DType::BF16;
    if (t == "float16" || t == "half" || t == "f16" || t == "fp16")
        return DType::F16;
    if (t == "float32" || t == "float" || t == "f32" || t == "fp32")
        return DType::F32;
    if (t == "float8_e4m3fn" || t == "f8_e4m3" || t == "fp8")
        return DType::F8_E4M3;
    if (t == "float8_e5m2" || t == "f8_e5m2")
        return DType::F8_E5M2;
    return std::nullopt;
}

// Attention projections of one decoder layer: q, k, v, o (MLA: the q path, kv_a, kv_b, o).
double attentionParams(const ModelSpec& s)
{
    const double h = static_cast<double>(s.hiddenSize);
    if (s.mla.enabled()) {
        const MlaSpec& m = s.mla;
        const double nh = static_cast<double>(s.numHeads), qk = static_cast<double>(m.qkHeadDim());
        const double qr = static_cast<double>(m.qLoraRank), kvr = static_cast<double>(m.kvLoraRank);
        const double q = m.qLoraRank > 0 ? h * qr + qr * nh * qk : h * nh * qk;
        const double kv = h * (kvr + static_cast<double>(m.qkRopeHeadDim))
            + kvr * nh * static_cast<double>(m.qkNopeHeadDim + m.vHeadDim);
        return q + kv + nh * static_cast<double>(m.vHeadDim) * h;
    }
    const double q = static_cast<double>(s.numHeads) * static_cast<double>(s.headDim);
    const double kv = static_cast<double>(s.numKvHeads) * static_cast<double>(s.headDim);
    return h * q + 2.0 * h * kv + q * h;
}

void addParams(PhaseShape& phase, double params, double dtypeBytes)
{
    phase.weightBytes += params * dtypeBytes;
    phase.flopsPerToken += 2.0 * params;
}

void addAttention(PhaseShape& phase, const ModelSpec& s, const LayerSpec& layer, double dtypeBytes)
{
    addParams(phase, attentionParams(s), dtypeBytes);
    if (layer.slidingWindow && s.slidingWindow)
        phase.windows.push_back(*s.slidingWindow);
    else
        ++phase.fullAttention;
}

double requiredTime(const nlohmann::json& obj, const std::string& source, const std::string& field)
{
    const auto it = obj.find(field.substr(field.find_last_of('.') + 1));
    if (it == obj.end())
        throw InputError(source + ": field '" + field + "' is missing");
    if (!it->is_number() || !(it->get<double>() >= 0))
        throw InputError(source + ": field '" + field + "' must be a number of seconds >= 0");
    return it->get<double>();
}

} // namespace

DType weightDtype(const ModelSpec& spec, const std::string& override, const std::string& field)
{
    if (!override.empty()) {
        if (const auto d = parseDType(override); d && isFloatingPoint(*d))
            return *d;
        if (const auto d = parseAnyDtype(override))
            return *d;
        throw RequestError(
            field, "unknown weight dtype '" + override + "': expected bfloat16, float16, float32 or float8_e4m3fn");
    }
    if (const auto d = parseAnyDtype(spec.torchDtype))
        return *d;
    throw RequestError(field,
        spec.torchDtype.empty() ? "the config names no torch_dtype: give the weight dtype"
                                : "the config's torch_dtype '" + spec.torchDtype + "' is not a float dtype: give one");
}

ModelCosts modelCosts(const ModelSpec& s, DType dtype)
{
    ModelCosts c;
    const double b = static_cast<double>(dtypeSize(dtype));
    const double h = static_cast<double>(s.hiddenSize);
    c.dtype = dtype;
    c.numExperts = s.router.numExperts;
    c.topK = s.router.topK;
    c.attentionFlopsPerKey = 4.0 * static_cast<double>(s.numHeads) * static_cast<double>(s.headDim);
    c.kvBytesPerKey = 2.0 * static_cast<double>(s.numKvHeads) * static_cast<double>(s.headDim) * b;
    if (s.mla.enabled()) { // scores over qk_head_dim, context over v_head_dim; the cache holds the latent
        c.attentionFlopsPerKey
            = 2.0 * static_cast<double>(s.numHeads) * static_cast<double>(s.mla.qkHeadDim() + s.mla.vHeadDim);
        c.kvBytesPerKey = static_cast<double>(s.mla.kvLoraRank + s.mla.qkRopeHeadDim) * b;
    }
    PhaseShape pending; // dense layers since the last MoE layer
    for (int i = 0; i < static_cast<int>(s.layers.size()); ++i) {
        const LayerSpec& layer = s.layers[static_cast<std::size_t>(i)];
        addAttention(pending, s, layer, b);
        if (!layer.moe) {
            addParams(pending, 3.0 * h * static_cast<double>(layer.denseIntermediate), b);
            continue;
        }
        addParams(pending, h * static_cast<double>(s.router.numExperts), b); // router
        c.moeLayers.push_back(i);
        c.pre.push_back(std::move(pending));
        pending = PhaseShape {};
        PhaseShape shared;
        if (s.sharedIntermediate > 0)
            addParams(shared, 3.0 * h * static_cast<double>(s.sharedIntermediate) + (s.sharedExpertGate ? h : 0.0), b);
        c.shared.push_back(shared);
        for (int e = 0; e < s.router.numExperts; ++e) {
            const double width = layer.expertWidths.empty()
                ? static_cast<double>(s.moeIntermediate)
                : static_cast<double>(layer.expertWidths[static_cast<std::size_t>(e)]);
            c.expertBytes.push_back(3.0 * h * width * b);
            c.expertFlops.push_back(2.0 * 3.0 * h * width);
        }
    }
    addParams(pending, h * static_cast<double>(s.vocabSize), b); // LM head (read even when tied)
    c.tail = std::move(pending);
    return c;
}

MeasuredTimes parseMeasuredTimes(const nlohmann::json& doc, const std::string& source, int numMoeLayers)
{
    if (!doc.is_object())
        throw InputError(source + ": not a JSON object of measured layer times");
    const auto layers = doc.find("layers");
    if (layers == doc.end() || !layers->is_array())
        throw InputError(source + ": field 'layers' must be an array, one entry per MoE layer");
    if (static_cast<int>(layers->size()) != numMoeLayers)
        throw InputError(source + ": field 'layers' has " + std::to_string(layers->size()) + " entries, the model has "
            + std::to_string(numMoeLayers) + " MoE layers");
    MeasuredTimes m;
    for (std::size_t i = 0; i < layers->size(); ++i) {
        const nlohmann::json& e = (*layers)[i];
        const std::string at = "layers[" + std::to_string(i) + "].";
        if (!e.is_object())
            throw InputError(source + ": field '" + at.substr(0, at.size() - 1) + "' must be an object");
        m.layers.push_back(LayerTime { requiredTime(e, source, at + "pre"), requiredTime(e, source, at + "moe"),
            requiredTime(e, source, at + "per_expert") });
    }
    m.tail = requiredTime(doc, source, "tail");
    return m;
}

ComputeModel::Work ComputeModel::phaseWork(const PhaseShape& phase, std::span<const int64_t> contexts) const
{
    Work w { phase.flopsPerToken * static_cast<double>(contexts.size()), phase.weightBytes };
    double keys = 0;
    for (const int64_t ctx : contexts) {
        keys += static_cast<double>(phase.fullAttention) * static_cast<double>(ctx);
        for (const int64_t window : phase.windows)
            keys += static_cast<double>(std::min(ctx, window));
    }
    w.flops += keys * costs.attentionFlopsPerKey;
    w.bytes += keys * costs.kvBytesPerKey;
    return w;
}

ComputeModel::Work ComputeModel::moeWork(
    int layer, std::span<const int32_t> experts, std::span<const int32_t> assignments, int tokens) const
{
    const PhaseShape& shared = costs.shared[static_cast<std::size_t>(layer)];
    Work w { shared.flopsPerToken * tokens, shared.weightBytes };
    const std::size_t base = static_cast<std::size_t>(layer) * static_cast<std::size_t>(costs.numExperts);
    for (std::size_t i = 0; i < experts.size(); ++i) {
        const std::size_t id = base + static_cast<std::size_t>(experts[i]);
        w.flops += costs.expertFlops[id] * assignments[i];
        w.bytes += costs.expertBytes[id];
    }
    return w;
}

double ComputeModel::preTime(int layer, std::span<const int64_t> contexts) const
{
    if (measured)
        return measured->layers[static_cast<std::size_t>(layer)].pre;
    const Work w = phaseWork(costs.pre[static_cast<std::size_t>(layer)], contexts);
    return std::max(w.flops / flopsPerSecond, w.bytes / memoryBandwidth);
}

double ComputeModel::moeTime(
    int layer, std::span<const int32_t> experts, std::span<const int32_t> assignments, int tokens) const
{
    if (measured) {
        const LayerTime& t = measured->layers[static_cast<std::size_t>(layer)];
        return t.moe + t.perExpert * static_cast<double>(experts.size());
    }
    const Work w = moeWork(layer, experts, assignments, tokens);
    return std::max(w.flops / flopsPerSecond, w.bytes / memoryBandwidth);
}

double ComputeModel::tailTime(std::span<const int64_t> contexts) const
{
    if (measured)
        return measured->tail;
    const Work w = phaseWork(costs.tail, contexts);
    return std::max(w.flops / flopsPerSecond, w.bytes / memoryBandwidth);
}

} // namespace moeatlas
