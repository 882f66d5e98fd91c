#include "checkpoint/tensor_layout.h"

#include "checkpoint/fp8.h"
#include "util/error.h"

namespace moeatlas {

std::string formatShape(const std::vector<int64_t>& shape)
{
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

TensorLayout::TensorLayout(const Checkpoint& checkpoint, const ModelSpec& spec)
    : m_spec(spec)
{
    const std::vector<int> moeLayers = spec.moeLayerIndices();
    if (moeLayers.empty())
        return;
    const std::string p = layerPrefix(moeLayers.front());
    if (spec.arch == Architecture::GptOss) {
        // One expert layout, fused; MXFP4 when the hub's packed blocks are present.
        m_layout = ExpertLayout::Fused;
        m_mxfp4 = checkpoint.contains(p + "mlp.experts.gate_up_proj_blocks");
        if (m_mxfp4 && spec.hiddenSize % 32 != 0)
            throw InputError("config.json: field 'hidden_size' is " + std::to_string(spec.hiddenSize)
                + " (expected a multiple of 32: the checkpoint's experts are MXFP4, 32 values per scale)");
        if (m_mxfp4 && spec.moeIntermediate % 32 != 0)
            throw InputError("config.json: field 'intermediate_size' is " + std::to_string(spec.moeIntermediate)
                + " (expected a multiple of 32: the checkpoint's experts are MXFP4, 32 values per scale)");
        return;
    }
    if (checkpoint.contains(p + "mlp.experts.gate_up_proj"))
        m_layout = ExpertLayout::Fused;
    else if (spec.arch == Architecture::Mixtral && checkpoint.contains(p + "block_sparse_moe.gate.weight"))
        m_blockSparseMoe = true;
}

std::string TensorLayout::layerPrefix(int layer) const
{
    return m_spec.tensorPrefix + "layers." + std::to_string(layer) + ".";
}

std::string TensorLayout::embedName() const
{
    return m_spec.tensorPrefix + "embed_tokens.weight";
}

std::string TensorLayout::finalNormName() const
{
    return m_spec.tensorPrefix + "norm.weight";
}

std::string TensorLayout::moePrefix(int layer) const
{
    return layerPrefix(layer) + (m_blockSparseMoe ? "block_sparse_moe." : "mlp.");
}

std::string TensorLayout::routerName(int layer) const
{
    return moePrefix(layer) + (m_spec.arch == Architecture::GptOss ? "router.weight" : "gate.weight");
}

std::string TensorLayout::routerBiasName(int layer) const
{
    return moePrefix(layer) + "router.bias";
}

std::string TensorLayout::correctionBiasName(int layer) const
{
    return moePrefix(layer) + "gate.e_score_correction_bias";
}

std::string TensorLayout::sharedExpertPrefix(int layer) const
{
    return moePrefix(layer) + (m_spec.sharedExpertsPlural ? "shared_experts." : "shared_expert.");
}

std::string TensorLayout::expertName(int layer, int expert, ExpertProj proj) const
{
    static const char* const mixtral[] = { "w1", "w3", "w2" };
    static const char* const others[] = { "gate_proj", "up_proj", "down_proj" };
    const auto i = static_cast<std::size_t>(proj);
    // Ragged exports name every architecture's experts as Qwen's (export_tensors.cpp).
    const bool ragged = !m_spec.layers[static_cast<std::size_t>(layer)].expertWidths.empty();
    const char* n = m_spec.arch == Architecture::Mixtral && !ragged ? mixtral[i] : others[i];
    return moePrefix(layer) + "experts." + std::to_string(expert) + "." + n + ".weight";
}

std::string TensorLayout::fusedGateUpName(int layer) const
{
    return moePrefix(layer) + "experts.gate_up_proj";
}

std::string TensorLayout::fusedDownName(int layer) const
{
    return moePrefix(layer) + "experts.down_proj";
}

std::vector<ExpectedTensor> TensorLayout::layerTensors(int layer) const
{
    const int64_t H = m_spec.hiddenSize;
    const std::string p = layerPrefix(layer);
    const LayerSpec& ls = m_spec.layers[static_cast<std::size_t>(layer)];
    std::vector<ExpectedTensor> t = {
        { p + "input_layernorm.weight", { H } },
        { p + "post_attention_layernorm.weight", { H } },
    };
    if (ls.linearAttention)
        appendLinearAttention(t, p + "linear_attn.");
    else
        appendSelfAttention(t, p);
    appendMlp(t, layer);
    return t;
}

void TensorLayout::appendLinearAttention(std::vector<ExpectedTensor>& t, const std::string& a) const
{
    const LinearAttentionSpec& la = m_spec.linearAttention;
    const int64_t H = m_spec.hiddenSize, nv = la.numValueHeads;
    t.push_back({ a + "in_proj_qkv.weight", { la.convDim(), H } });
    t.push_back({ a + "in_proj_z.weight", { la.valueDim(), H } });
    t.push_back({ a + "in_proj_b.weight", { nv, H } });
    t.push_back({ a + "in_proj_a.weight", { nv, H } });
    t.push_back({ a + "conv1d.weight", { la.convDim(), 1, la.convKernel } });
    t.push_back({ a + "dt_bias", { nv } });
    t.push_back({ a + "A_log", { nv } });
    t.push_back({ a + "norm.weight", { la.valueHeadDim } });
    t.push_back({ a + "out_proj.weight", { H, la.valueDim() } });
}

void TensorLayout::appendMlaAttention(std::vector<ExpectedTensor>& t, const std::string& p) const
{
    const MlaSpec& m = m_spec.mla;
    const int64_t H = m_spec.hiddenSize, nh = m_spec.numHeads;
    const std::string a = p + "self_attn.";
    if (m.qLoraRank > 0) {
        t.push_back({ a + "q_a_proj.weight", { m.qLoraRank, H } });
        if (m.attentionBias)
            t.push_back({ a + "q_a_proj.bias", { m.qLoraRank } });
        t.push_back({ a + "q_a_layernorm.weight", { m.qLoraRank } });
        t.push_back({ a + "q_b_proj.weight", { nh * m.qkHeadDim(), m.qLoraRank } });
    } else {
        t.push_back({ a + "q_proj.weight", { nh * m.qkHeadDim(), H } });
    }
    t.push_back({ a + "kv_a_proj_with_mqa.weight", { m.kvLoraRank + m.qkRopeHeadDim, H } });
    if (m.attentionBias)
        t.push_back({ a + "kv_a_proj_with_mqa.bias", { m.kvLoraRank + m.qkRopeHeadDim } });
    t.push_back({ a + "kv_a_layernorm.weight", { m.kvLoraRank } });
    t.push_back({ a + "kv_b_proj.weight", { nh * (m.qkNopeHeadDim + m.vHeadDim), m.kvLoraRank } });
    t.push_back({ a + "o_proj.weight", { H, nh * m.vHeadDim } });
    if (m.attentionBias)
        t.push_back({ a + "o_proj.bias", { H } });
}

void TensorLayout::appendSelfAttention(std::vector<ExpectedTensor>& t, const std::string& p) const
{
    const ModelSpec& s = m_spec;
    if (s.mla.enabled()) {
        appendMlaAttention(t, p);
        return;
    }
    const int64_t H = s.hiddenSize, hd = s.headDim;
    const int64_t qOut = s.numHeads * hd, kvOut = s.numKvHeads * hd;
    // A gated attention's q_proj holds the output gate too: [query_h; gate_h] per head.
    const int64_t qRows = s.attnOutputGate ? 2 * qOut : qOut;
    t.insert(t.end(),
        {
            { p + "self_attn.q_proj.weight", { qRows, H } },
            { p + "self_attn.k_proj.weight", { kvOut, H } },
            { p + "self_attn.v_proj.weight", { kvOut, H } },
            { p + "self_attn.o_proj.weight", { H, qOut } },
        });
    if (s.qkvBias) {
        t.push_back({ p + "self_attn.q_proj.bias", { qRows } });
        t.push_back({ p + "self_attn.k_proj.bias", { kvOut } });
        t.push_back({ p + "self_attn.v_proj.bias", { kvOut } });
    }
    if (s.oBias)
        t.push_back({ p + "self_attn.o_proj.bias", { H } });
    if (s.attentionSinks)
        t.push_back({ p + "self_attn.sinks", { s.numHeads } });
    if (s.qkNorm == QkNorm::PerHead) {
        t.push_back({ p + "self_attn.q_norm.weight", { hd } });
        t.push_back({ p + "self_attn.k_norm.weight", { hd } });
    } else if (s.qkNorm == QkNorm::Full) {
        t.push_back({ p + "self_attn.q_norm.weight", { qOut } });
        t.push_back({ p + "self_attn.k_norm.weight", { kvOut } });
    }
}

void TensorLayout::appendMlp(std::vector<ExpectedTensor>& t, int layer) const
{
    const ModelSpec& s = m_spec;
    const int64_t H = s.hiddenSize;
    const std::string p = layerPrefix(layer);
    const LayerSpec& ls = s.layers[static_cast<std::size_t>(layer)];
    if (!ls.moe) {
        const int64_t I = ls.denseIntermediate;
        t.push_back({ p + "mlp.gate_proj.weight", { I, H } });
        t.push_back({ p + "mlp.up_proj.weight", { I, H } });
        t.push_back({ p + "mlp.down_proj.weight", { H, I } });
        return;
    }
    const int64_t E = s.router.numExperts, I = s.moeIntermediate;
    t.push_back({ routerName(layer), { E, H } });
    if (s.router.bias)
        t.push_back({ routerBiasName(layer), { E } });
    if (s.router.correctionBias)
        t.push_back({ correctionBiasName(layer), { E } });
    if (s.arch == Architecture::GptOss) {
        const std::string gu = fusedGateUpName(layer), dn = fusedDownName(layer);
        if (m_mxfp4) {
            t.push_back({ gu + "_blocks", { E, 2 * I, H / 32, 16 } });
            t.push_back({ gu + "_scales", { E, 2 * I, H / 32 } });
            t.push_back({ dn + "_blocks", { E, H, I / 32, 16 } });
            t.push_back({ dn + "_scales", { E, H, I / 32 } });
        } else {
            t.push_back({ gu, { E, H, 2 * I } });
            t.push_back({ dn, { E, I, H } });
        }
        t.push_back({ gu + "_bias", { E, 2 * I } });
        t.push_back({ dn + "_bias", { E, H } });
        return;
    }
    if (!ls.expertWidths.empty()) {
        // One tensor per expert at its own width; a zero-width expert's are empty ([0, H], [H, 0]).
        for (int e = 0; e < E; ++e) {
            const int64_t w = ls.expertWidths[static_cast<std::size_t>(e)];
            t.push_back({ expertName(layer, e, ExpertProj::Gate), { w, H } });
            t.push_back({ expertName(layer, e, ExpertProj::Up), { w, H } });
            t.push_back({ expertName(layer, e, ExpertProj::Down), { H, w } });
        }
    } else if (m_layout == ExpertLayout::Fused) {
        t.push_back({ fusedGateUpName(layer), { E, 2 * I, H } });
        t.push_back({ fusedDownName(layer), { E, H, I } });
    } else {
        for (int e = 0; e < E; ++e) {
            t.push_back({ expertName(layer, e, ExpertProj::Gate), { I, H } });
            t.push_back({ expertName(layer, e, ExpertProj::Up), { I, H } });
            t.push_back({ expertName(layer, e, ExpertProj::Down), { H, I } });
        }
    }
    if (s.sharedIntermediate > 0) {
        const std::string m = moePrefix(layer), se = sharedExpertPrefix(layer);
        const int64_t SI = s.sharedIntermediate;
        t.push_back({ se + "gate_proj.weight", { SI, H } });
        t.push_back({ se + "up_proj.weight", { SI, H } });
        t.push_back({ se + "down_proj.weight", { H, SI } });
        if (s.sharedExpertGate)
            t.push_back({ m + "shared_expert_gate.weight", { 1, H } });
    }
}

std::vector<ExpectedTensor> TensorLayout::globalTensors() const
{
    std::vector<ExpectedTensor> t
        = { { embedName(), { m_spec.vocabSize, m_spec.hiddenSize } }, { finalNormName(), { m_spec.hiddenSize } } };
    if (!m_spec.tieWordEmbeddings)
        t.push_back({ "lm_head.weight", { m_spec.vocabSize, m_spec.hiddenSize } });
    return t;
}

void TensorLayout::validate(const Checkpoint& checkpoint) const
{
    auto check = [&](const ExpectedTensor& e) {
        const TensorInfo& info = checkpoint.info(e.name); // throws "missing tensor" naming it
        const std::string file = checkpoint.fileOf(e.name).path().string();
        if (info.shape != e.shape)
            throw InputError(file + ": tensor '" + e.name + "' has shape " + formatShape(info.shape) + ", expected "
                + formatShape(e.shape) + " from config.json");
        const bool packed = m_mxfp4 && (e.name.ends_with("_blocks") || e.name.ends_with("_scales"));
        if (packed && info.dtype != DType::U8)
            throw InputError(file + ": tensor '" + e.name + "' has dtype " + std::string(dtypeName(info.dtype))
                + ", expected U8 (MXFP4 " + (e.name.ends_with("_blocks") ? "blocks" : "scales") + ")");
        if (!packed && !isFloatingPoint(info.dtype))
            throw InputError(file + ": tensor '" + e.name + "' has dtype " + std::string(dtypeName(info.dtype))
                + ", expected a floating-point type");
    };
    for (const ExpectedTensor& e : globalTensors())
        check(e);
    for (int l = 0; l < m_spec.numLayers; ++l)
        for (const ExpectedTensor& e : layerTensors(l))
            check(e);
    validateFp8Tensors(checkpoint, m_spec, embedName());
}

uint64_t TensorLayout::layerBytes(const Checkpoint& checkpoint, int layer) const
{
    uint64_t total = 0;
    for (const ExpectedTensor& e : layerTensors(layer)) {
        total += checkpoint.info(e.name).byteSize();
        if (isFp8Scaled(checkpoint, m_spec, e.name) && checkpoint.contains(fp8ScaleName(e.name)))
            total += checkpoint.info(fp8ScaleName(e.name)).byteSize();
    }
    return total;
}

uint64_t TensorLayout::layerValues(int layer) const
{
    uint64_t total = 0;
    for (const ExpectedTensor& e : layerTensors(layer)) {
        uint64_t n = 1;
        for (const int64_t d : e.shape)
            n *= static_cast<uint64_t>(d);
        if (m_mxfp4 && e.name.ends_with("_blocks"))
            n *= 2; // two E2M1 values per byte
        else if (m_mxfp4 && e.name.ends_with("_scales"))
            n = 0;
        total += n;
    }
    return total;
}

} // namespace moeatlas
