#include "model/layer_weights.h"

#include "checkpoint/fp8.h"
#include "checkpoint/mxfp4.h"
#include "util/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace moeatlas {

namespace {

c10::ScalarType scalarTypeOf(DType t)
{
    switch (t) {
    case DType::F64:
        return c10::kDouble;
    case DType::F32:
        return c10::kFloat;
    case DType::F16:
        return c10::kHalf;
    case DType::BF16:
        return c10::kBFloat16;
    case DType::I64:
        return c10::kLong;
    case DType::I32:
        return c10::kInt;
    case DType::I16:
        return c10::kShort;
    case DType::I8:
        return c10::kChar;
    case DType::U8:
        return c10::kByte;
    case DType::BOOL:
        return c10::kBool;
    case DType::F8_E4M3:
    case DType::F8_E5M2:
        break;
    }
    return c10::kFloat;
}

} // namespace

at::Tensor tensorFromBytes(
    const void* data, DType dtype, const std::vector<int64_t>& shape, c10::ScalarType target, c10::Device device)
{
    if (dtype == DType::F8_E4M3 || dtype == DType::F8_E5M2) {
        int64_t n = 1;
        for (int64_t d : shape)
            n *= d;
        at::Tensor wide = at::empty(shape, at::TensorOptions().dtype(c10::kFloat));
        const auto& table = dtype == DType::F8_E4M3 ? e4m3Table() : e5m2Table();
        const auto* src = static_cast<const uint8_t*>(data);
        float* dst = wide.data_ptr<float>();
        for (int64_t i = 0; i < n; ++i)
            dst[i] = table[src[i]];
        return wide.to(device, target);
    }
    // from_blob does not own or modify the bytes; .to(..., copy=true) makes the owned copy.
    at::Tensor view = at::from_blob(const_cast<void*>(data), shape, at::TensorOptions().dtype(scalarTypeOf(dtype)));
    return view.to(device, target, /*non_blocking=*/false, /*copy=*/true);
}

WeightLoader::WeightLoader(const Checkpoint& checkpoint, const ModelSpec& spec, WeightLoadOptions options)
    : m_ckpt(checkpoint)
    , m_spec(spec)
    , m_opt(options)
    , m_layout(checkpoint, spec)
{
    // Every tensor of every layer up front: a checkpoint that would fail at layer 40 after an
    // hour of capture must fail before any output exists.
    m_layout.validate(checkpoint);
}

at::Tensor WeightLoader::load(const std::string& name, const std::vector<int64_t>& shape) const
{
    const TensorInfo& info = m_ckpt.info(name);
    if (info.shape != shape) // validated up front; this guards the loader's own bookkeeping
        throw InputError(m_ckpt.fileOf(name).path().string() + ": tensor '" + name + "' has shape "
            + formatShape(info.shape) + ", expected " + formatShape(shape));
    if (isFp8Scaled(m_ckpt, m_spec, name))
        return loadFp8(name, shape);
    at::Tensor t = tensorFromBytes(m_ckpt.bytes(name).data(), info.dtype, shape, m_opt.dtype, m_opt.device);
    if (m_opt.releaseSourcePages)
        m_ckpt.release(name);
    return t;
}

void WeightLoader::loadInto(const std::string& name, const at::Tensor& destination) const
{
    const TensorInfo& info = m_ckpt.info(name);
    if (info.dtype == DType::F8_E4M3 || info.dtype == DType::F8_E5M2 || !destination.device().is_cpu()) {
        destination.copy_(load(name, destination.sizes().vec()));
        return;
    }
    if (info.shape != destination.sizes().vec())
        throw InputError(m_ckpt.fileOf(name).path().string() + ": tensor '" + name + "' has shape "
            + formatShape(info.shape) + ", expected " + formatShape(destination.sizes().vec()));
    const at::Tensor view = at::from_blob(const_cast<std::byte*>(m_ckpt.bytes(name).data()), info.shape,
        at::TensorOptions().dtype(scalarTypeOf(info.dtype)));
    destination.copy_(view);
    if (m_opt.releaseSourcePages)
        m_ckpt.release(name);
}

Linear WeightLoader::loadLinear(const std::string& prefix, int64_t out, int64_t in, bool bias) const
{
    Linear l;
    l.weight = load(prefix + ".weight", { out, in });
    if (bias)
        l.bias = load(prefix + ".bias", { out });
    return l;
}

void WeightLoader::loadExperts(int layer, LayerWeights& w) const
{
    const ModelSpec& s = m_spec;
    const int64_t E = s.router.numExperts, H = s.hiddenSize, I = s.moeIntermediate;
    w.router = load(m_layout.routerName(layer), { E, H });
    if (s.router.bias)
        w.routerBias = load(m_layout.routerBiasName(layer), { E });
    if (s.router.correctionBias) {
        // transformers keeps the buffer float32 (a bf16 checkpoint's values convert exactly).
        const std::string name = m_layout.correctionBiasName(layer);
        const TensorInfo& info = m_ckpt.info(name);
        w.correctionBias = tensorFromBytes(m_ckpt.bytes(name).data(), info.dtype, { E }, at::kFloat, m_opt.device);
    }
    w.routerFloat32 = s.router.sigmoid();
    if (s.arch == Architecture::GptOss) {
        loadGptOssExperts(layer, w);
        return;
    }
    const auto options = at::TensorOptions().dtype(m_opt.dtype).device(m_opt.device);
    const std::vector<int64_t>& widths = s.layers[static_cast<std::size_t>(layer)].expertWidths;
    if (!widths.empty()) {
        // A ragged checkpoint: every expert at its own width, in the [gate; up] form moeForward runs.
        RaggedExperts& r = w.ragged;
        r.widths = widths;
        r.gateUp.resize(static_cast<std::size_t>(E));
        r.down.resize(static_cast<std::size_t>(E));
        for (int e = 0; e < E; ++e) {
            const int64_t we = widths[static_cast<std::size_t>(e)];
            if (we == 0)
                continue; // nothing to compute; its empty tensors were validated
            at::Tensor& gateUp = r.gateUp[static_cast<std::size_t>(e)];
            gateUp = at::empty({ 2 * we, H }, options);
            loadInto(m_layout.expertName(layer, e, ExpertProj::Gate), gateUp.narrow(0, 0, we));
            loadInto(m_layout.expertName(layer, e, ExpertProj::Up), gateUp.narrow(0, we, we));
            r.down[static_cast<std::size_t>(e)] = load(m_layout.expertName(layer, e, ExpertProj::Down), { H, we });
        }
        return;
    }
    if (m_layout.expertLayout() == ExpertLayout::Fused) {
        w.gateUp = load(m_layout.fusedGateUpName(layer), { E, 2 * I, H });
        w.down = load(m_layout.fusedDownName(layer), { E, H, I });
        return;
    }
    w.gateUp = at::empty({ E, 2 * I, H }, options);
    w.down = at::empty({ E, H, I }, options);
    for (int e = 0; e < E; ++e) {
        loadInto(m_layout.expertName(layer, e, ExpertProj::Gate), w.gateUp[e].narrow(0, 0, I));
        loadInto(m_layout.expertName(layer, e, ExpertProj::Up), w.gateUp[e].narrow(0, I, I));
        loadInto(m_layout.expertName(layer, e, ExpertProj::Down), w.down[e]);
    }
}

namespace {

// Gate and up interleaved along `dim` (even = gate) -> gate first, then up, contiguous.
at::Tensor deinterleave(const at::Tensor& t, int64_t dim)
{
    const int64_t n = t.size(dim);
    return at::cat({ t.slice(dim, 0, n, 2), t.slice(dim, 1, n, 2) }, dim).contiguous();
}

} // namespace

at::Tensor WeightLoader::loadMxfp4(const std::string& name, int64_t experts, int64_t rows, int64_t cols) const
{
    // Validated up front (TensorLayout::validate: shapes [E, rows, cols/32, 16] and [E, rows, cols/32], U8).
    const std::string blocksName = name + "_blocks", scalesName = name + "_scales";
    const auto* blocks = reinterpret_cast<const uint8_t*>(m_ckpt.bytes(blocksName).data());
    const auto* scales = reinterpret_cast<const uint8_t*>(m_ckpt.bytes(scalesName).data());
    at::Tensor out = at::empty({ experts, rows, cols }, at::TensorOptions().dtype(m_opt.dtype).device(m_opt.device));
    // One expert at a time: a float32 buffer of one expert, converted into the compute dtype.
    at::Tensor buffer = at::empty({ rows, cols }, at::kFloat);
    const int64_t blockBytes = rows * (cols / 32) * 16, scaleBytes = rows * (cols / 32);
    for (int64_t e = 0; e < experts; ++e) {
        decodeMxfp4(blocks + e * blockBytes, scales + e * scaleBytes, rows, cols, buffer.data_ptr<float>());
        out[e].copy_(buffer);
    }
    if (m_opt.releaseSourcePages) {
        m_ckpt.release(blocksName);
        m_ckpt.release(scalesName);
    }
    return out;
}

at::Tensor WeightLoader::loadFp8(const std::string& name, const std::vector<int64_t>& shape) const
{
    // Validated up front (validateFp8Tensors: F32 scales of the block grid's shape).
    const std::string scaleName = fp8ScaleName(name);
    const auto* bytes = reinterpret_cast<const uint8_t*>(m_ckpt.bytes(name).data());
    const auto* scales = reinterpret_cast<const float*>(m_ckpt.bytes(scaleName).data());
    const int64_t rows = shape[shape.size() - 2], cols = shape.back();
    const std::vector<int64_t> grid = fp8ScaleShape(shape, m_spec.fp8);
    const int64_t matrixScales = grid[grid.size() - 2] * grid.back();
    int64_t matrices = 1;
    for (std::size_t d = 0; d + 2 < shape.size(); ++d)
        matrices *= shape[d];
    at::Tensor out = at::empty(shape, at::TensorOptions().dtype(m_opt.dtype).device(m_opt.device));
    const at::Tensor flat = out.view({ matrices, rows, cols });
    // One matrix (one expert of a fused tensor) at a time: a float32 buffer of one matrix.
    at::Tensor buffer = at::empty({ rows, cols }, at::kFloat);
    for (int64_t m = 0; m < matrices; ++m) {
        dequantizeFp8(bytes + m * rows * cols, scales + m * matrixScales, rows, cols, m_spec.fp8.blockRows,
            m_spec.fp8.blockCols, buffer.data_ptr<float>());
        flat[m].copy_(buffer);
    }
    if (m_opt.releaseSourcePages) {
        m_ckpt.release(name);
        m_ckpt.release(scaleName);
    }
    return out;
}

void WeightLoader::loadGptOssExperts(int layer, LayerWeights& w) const
{
    const ModelSpec& s = m_spec;
    const int64_t E = s.router.numExperts, H = s.hiddenSize, I = s.moeIntermediate;
    const std::string gu = m_layout.fusedGateUpName(layer), dn = m_layout.fusedDownName(layer);
    if (m_layout.mxfp4()) {
        // MXFP4 rows are the output dimension: gate_up [E, 2I, H] (rows interleaved), down [E, H, I].
        w.gateUp = deinterleave(loadMxfp4(gu, E, 2 * I, H), 1);
        w.down = loadMxfp4(dn, E, H, I);
    } else {
        // Stored as x @ W: gate_up_proj [E, H, 2I], down_proj [E, I, H].
        w.gateUp = deinterleave(load(gu, { E, H, 2 * I }), 2).transpose(1, 2).contiguous();
        w.down = load(dn, { E, I, H }).transpose(1, 2).contiguous();
    }
    w.gateUpBias = deinterleave(load(gu + "_bias", { E, 2 * I }), 1);
    w.downBias = load(dn + "_bias", { E, H });
}

int64_t RaggedExperts::maxWidth() const
{
    return widths.empty() ? 0 : *std::max_element(widths.begin(), widths.end());
}

uint64_t RaggedExperts::bytes() const
{
    uint64_t total = 0;
    for (const std::vector<at::Tensor>* part : { &gateUp, &down })
        for (const at::Tensor& t : *part)
            if (t.defined())
                total += static_cast<uint64_t>(t.numel()) * t.element_size();
    return total;
}

RaggedExperts sliceExperts(const LayerWeights& w, const std::vector<std::vector<int>>& units)
{
    if (!w.gateUp.defined())
        throw std::invalid_argument("sliceExperts: layer " + std::to_string(w.layer) + " has no full-width experts");
    const int64_t E = w.gateUp.size(0), I = w.down.size(2);
    if (static_cast<int64_t>(units.size()) != E)
        throw std::invalid_argument("sliceExperts: unit lists for " + std::to_string(units.size()) + " experts, layer "
            + std::to_string(w.layer) + " has " + std::to_string(E));
    RaggedExperts r;
    r.widths.resize(static_cast<std::size_t>(E));
    r.gateUp.resize(static_cast<std::size_t>(E));
    r.down.resize(static_cast<std::size_t>(E));
    if (w.gateUpBias.defined()) {
        // gpt_oss: the kept units' gate and up biases; the down bias whole (a zero-width expert still adds it).
        r.gateUpBias.resize(static_cast<std::size_t>(E));
        for (int64_t e = 0; e < E; ++e)
            r.downBias.push_back(w.downBias[e]);
    }
    for (int64_t e = 0; e < E; ++e) {
        const std::vector<int>& u = units[static_cast<std::size_t>(e)];
        const auto width = static_cast<int64_t>(u.size());
        r.widths[static_cast<std::size_t>(e)] = width;
        if (width == 0)
            continue;
        // Gate rows u, then up rows I + u: the [gate; up] layout moeForward splits at `width`.
        std::vector<int64_t> rows(static_cast<std::size_t>(2 * width));
        for (int64_t j = 0; j < width; ++j) {
            rows[static_cast<std::size_t>(j)] = u[static_cast<std::size_t>(j)];
            rows[static_cast<std::size_t>(width + j)] = I + u[static_cast<std::size_t>(j)];
        }
        const at::Tensor index = at::tensor(at::ArrayRef<int64_t>(rows), at::kLong).to(w.gateUp.device());
        r.gateUp[static_cast<std::size_t>(e)] = w.gateUp[e].index_select(0, index);
        r.down[static_cast<std::size_t>(e)] = w.down[e].index_select(1, index.narrow(0, 0, width));
        if (w.gateUpBias.defined())
            r.gateUpBias[static_cast<std::size_t>(e)] = w.gateUpBias[e].index_select(0, index);
    }
    return r;
}

LayerWeights WeightLoader::loadLayer(int layer) const
{
    const ModelSpec& s = m_spec;
    const int64_t H = s.hiddenSize;
    const std::string p = m_layout.layerPrefix(layer);
    LayerWeights w;
    w.layer = layer;
    w.sourceBytes = layerBytes(layer);
    w.inputNorm = loadNorm(p + "input_layernorm.weight", H);
    w.postAttentionNorm = loadNorm(p + "post_attention_layernorm.weight", H);
    const LayerSpec& ls = s.layers[static_cast<std::size_t>(layer)];
    if (ls.linearAttention)
        w.deltaNet = loadDeltaNet(p + "linear_attn.");
    else
        loadSelfAttention(p, w);
    w.moe = ls.moe;
    if (!ls.moe) {
        const int64_t I = ls.denseIntermediate;
        w.mlpGate = loadLinear(p + "mlp.gate_proj", I, H, false);
        w.mlpUp = loadLinear(p + "mlp.up_proj", I, H, false);
        w.mlpDown = loadLinear(p + "mlp.down_proj", H, I, false);
        return w;
    }
    loadExperts(layer, w);
    if (s.sharedIntermediate > 0) {
        const std::string m = m_layout.moePrefix(layer), se = m_layout.sharedExpertPrefix(layer);
        const int64_t I = s.sharedIntermediate;
        w.mlpGate = loadLinear(se + "gate_proj", I, H, false);
        w.mlpUp = loadLinear(se + "up_proj", I, H, false);
        w.mlpDown = loadLinear(se + "down_proj", H, I, false);
        if (s.sharedExpertGate)
            w.sharedExpertGate = load(m + "shared_expert_gate.weight", { 1, H });
    }
    return w;
}

at::Tensor WeightLoader::loadNorm(const std::string& name, int64_t size) const
{
    if (m_spec.normWeightsFloat32) {
        // transformers keeps these norms in float32 whatever the model dtype (gpt_oss' _keep_in_fp32_modules).
        const TensorInfo& info = m_ckpt.info(name);
        if (info.shape != std::vector<int64_t> { size })
            throw InputError(m_ckpt.fileOf(name).path().string() + ": tensor '" + name + "' has shape "
                + formatShape(info.shape) + ", expected " + formatShape({ size }));
        at::Tensor t = tensorFromBytes(m_ckpt.bytes(name).data(), info.dtype, { size }, at::kFloat, m_opt.device);
        if (m_opt.releaseSourcePages)
            m_ckpt.release(name);
        return t;
    }
    at::Tensor weight = load(name, { size });
    // (1 + w) in fp32 from the weight in the compute dtype, as transformers computes 1.0 + weight.float().
    return m_spec.zeroCentredNorm ? weight.to(at::kFloat) + 1.0 : weight;
}

DeltaNetWeights WeightLoader::loadDeltaNet(const std::string& a) const
{
    const LinearAttentionSpec& la = m_spec.linearAttention;
    const int64_t H = m_spec.hiddenSize, nv = la.numValueHeads;
    DeltaNetWeights d;
    d.inProjQkv = loadLinear(a + "in_proj_qkv", la.convDim(), H, false);
    d.inProjZ = loadLinear(a + "in_proj_z", la.valueDim(), H, false);
    d.inProjB = loadLinear(a + "in_proj_b", nv, H, false);
    d.inProjA = loadLinear(a + "in_proj_a", nv, H, false);
    d.outProj = loadLinear(a + "out_proj", H, la.valueDim(), false);
    d.conv = load(a + "conv1d.weight", { la.convDim(), 1, la.convKernel }).squeeze(1);
    d.dtBias = load(a + "dt_bias", { nv });
    d.aLog = load(a + "A_log", { nv });
    d.norm = load(a + "norm.weight", { la.valueHeadDim });
    return d;
}

void WeightLoader::loadMlaAttention(const std::string& p, LayerWeights& w) const
{
    const MlaSpec& m = m_spec.mla;
    const int64_t H = m_spec.hiddenSize, nh = m_spec.numHeads;
    const std::string a = p + "self_attn.";
    if (m.qLoraRank > 0) {
        w.mla.qA = loadLinear(a + "q_a_proj", m.qLoraRank, H, m.attentionBias);
        w.mla.qANorm = loadNorm(a + "q_a_layernorm.weight", m.qLoraRank);
        w.mla.qB = loadLinear(a + "q_b_proj", nh * m.qkHeadDim(), m.qLoraRank, false);
    } else {
        w.q = loadLinear(a + "q_proj", nh * m.qkHeadDim(), H, false);
    }
    w.mla.kvA = loadLinear(a + "kv_a_proj_with_mqa", m.kvLoraRank + m.qkRopeHeadDim, H, m.attentionBias);
    w.mla.kvANorm = loadNorm(a + "kv_a_layernorm.weight", m.kvLoraRank);
    w.mla.kvB = loadLinear(a + "kv_b_proj", nh * (m.qkNopeHeadDim + m.vHeadDim), m.kvLoraRank, false);
    w.o = loadLinear(a + "o_proj", H, nh * m.vHeadDim, m.attentionBias);
}

void WeightLoader::loadSelfAttention(const std::string& p, LayerWeights& w) const
{
    const ModelSpec& s = m_spec;
    if (s.mla.enabled()) {
        loadMlaAttention(p, w);
        return;
    }
    const int64_t H = s.hiddenSize, hd = s.headDim;
    const int64_t qRows = int64_t { s.attnOutputGate ? 2 : 1 } * s.numHeads * hd;
    w.q = loadLinear(p + "self_attn.q_proj", qRows, H, s.qkvBias);
    w.k = loadLinear(p + "self_attn.k_proj", s.numKvHeads * hd, H, s.qkvBias);
    w.v = loadLinear(p + "self_attn.v_proj", s.numKvHeads * hd, H, s.qkvBias);
    w.o = loadLinear(p + "self_attn.o_proj", H, s.numHeads * hd, s.oBias);
    if (s.attentionSinks)
        w.sinks = load(p + "self_attn.sinks", { s.numHeads });
    if (s.qkNorm == QkNorm::PerHead) {
        w.qNorm = loadNorm(p + "self_attn.q_norm.weight", hd);
        w.kNorm = loadNorm(p + "self_attn.k_norm.weight", hd);
    } else if (s.qkNorm == QkNorm::Full) {
        w.qNorm = loadNorm(p + "self_attn.q_norm.weight", s.numHeads * hd);
        w.kNorm = loadNorm(p + "self_attn.k_norm.weight", s.numKvHeads * hd);
    }
}

at::Tensor WeightLoader::embed(const std::vector<int32_t>& ids) const
{
    const std::string name = m_layout.embedName();
    const TensorInfo& info = m_ckpt.info(name);
    const int64_t H = m_spec.hiddenSize;
    const std::size_t rowBytes = static_cast<std::size_t>(H) * dtypeSize(info.dtype);
    const std::byte* base = m_ckpt.bytes(name).data();
    std::vector<std::byte> rows(rowBytes * ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
        const int32_t id = ids[i];
        if (id < 0 || id >= m_spec.vocabSize)
            throw InputError("token id " + std::to_string(id) + " at position " + std::to_string(i)
                + " is outside the vocabulary [0, " + std::to_string(m_spec.vocabSize) + ")");
        std::memcpy(rows.data() + i * rowBytes, base + static_cast<std::size_t>(id) * rowBytes, rowBytes);
    }
    if (m_opt.releaseSourcePages)
        m_ckpt.release(name);
    return tensorFromBytes(rows.data(), info.dtype, { static_cast<int64_t>(ids.size()), H }, m_opt.dtype, m_opt.device);
}

at::Tensor WeightLoader::finalNorm() const
{
    return loadNorm(m_layout.finalNormName(), m_spec.hiddenSize);
}

at::Tensor WeightLoader::lmHead() const
{
    const std::string name = m_spec.tieWordEmbeddings ? m_layout.embedName() : "lm_head.weight";
    return load(name, { m_spec.vocabSize, m_spec.hiddenSize });
}

} // namespace moeatlas
