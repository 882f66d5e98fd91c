#include "train/moe_trainer.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/safetensors.h"
#include "runtime/runtime_policy.h"
#include "train/demo_corpus.h"
#include "util/error.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

namespace moeatlas {

namespace {

// One named parameter in HF naming; `decay` says whether AdamW's weight decay applies.
struct Param {
    std::string name;
    at::Tensor value;
    bool decay = true;
};

struct LayerParams {
    at::Tensor inputNorm, postNorm, q, k, v, o, gate;
    std::vector<at::Tensor> w1, w2, w3; // per expert: w1/w3 [I, H], w2 [H, I]
};

struct Model {
    DemoModelConfig config;
    at::Tensor embed, finalNorm, lmHead;
    std::vector<LayerParams> layers;
    std::vector<Param> params; // every tensor above, in checkpoint order

    void build(bool requiresGrad)
    {
        params.clear();
        auto add = [&](const std::string& name, at::Tensor& t, bool decay) {
            t.set_requires_grad(requiresGrad);
            params.push_back({ name, t, decay });
        };
        add("model.embed_tokens.weight", embed, true);
        for (std::size_t l = 0; l < layers.size(); ++l) {
            LayerParams& L = layers[l];
            const std::string p = "model.layers." + std::to_string(l) + ".";
            add(p + "input_layernorm.weight", L.inputNorm, false);
            add(p + "post_attention_layernorm.weight", L.postNorm, false);
            add(p + "self_attn.q_proj.weight", L.q, true);
            add(p + "self_attn.k_proj.weight", L.k, true);
            add(p + "self_attn.v_proj.weight", L.v, true);
            add(p + "self_attn.o_proj.weight", L.o, true);
            add(p + "block_sparse_moe.gate.weight", L.gate, true);
            for (std::size_t e = 0; e < L.w1.size(); ++e) {
                const std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
                add(ep + "w1.weight", L.w1[e], true);
                add(ep + "w2.weight", L.w2[e], true);
                add(ep + "w3.weight", L.w3[e], true);
            }
        }
        add("model.norm.weight", finalNorm, false);
        add("lm_head.weight", lmHead, true);
    }
};

at::Tensor normalTensor(SplitMix64& rng, const std::vector<int64_t>& shape, double std)
{
    int64_t n = 1;
    for (int64_t d : shape)
        n *= d;
    std::vector<float> values(static_cast<std::size_t>(n));
    for (auto& v : values) {
        const double u1 = (static_cast<double>(rng.next() >> 11) + 0.5) * 0x1.0p-53;
        const double u2 = rng.uniform();
        v = static_cast<float>(std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
    }
    return at::from_blob(values.data(), shape, at::kFloat).clone();
}

Model initModel(const DemoModelConfig& c, uint64_t seed)
{
    if (c.hiddenSize % c.numHeads != 0 || c.numHeads % c.numKvHeads != 0 || c.topK > c.numExperts)
        throw InputError("demo model: hidden size must divide into heads, heads into KV heads, top-k <= experts");
    SplitMix64 rng(seed ^ 0x5eed5eed5eedull);
    Model m;
    m.config = c;
    const int64_t H = c.hiddenSize, hd = c.headDim(), I = c.expertWidth;
    const double s = c.initStd;
    m.embed = normalTensor(rng, { c.vocabSize, H }, s);
    for (int l = 0; l < c.numLayers; ++l) {
        LayerParams L;
        L.inputNorm = at::ones({ H });
        L.postNorm = at::ones({ H });
        L.q = normalTensor(rng, { c.numHeads * hd, H }, s);
        L.k = normalTensor(rng, { c.numKvHeads * hd, H }, s);
        L.v = normalTensor(rng, { c.numKvHeads * hd, H }, s);
        L.o = normalTensor(rng, { H, c.numHeads * hd }, s);
        L.gate = normalTensor(rng, { c.numExperts, H }, c.routerInitStd);
        for (int e = 0; e < c.numExperts; ++e) {
            L.w1.push_back(normalTensor(rng, { I, H }, s));
            L.w2.push_back(normalTensor(rng, { H, I }, s));
            L.w3.push_back(normalTensor(rng, { I, H }, s));
        }
        m.layers.push_back(std::move(L));
    }
    m.finalNorm = at::ones({ H });
    m.lmHead = normalTensor(rng, { c.vocabSize, H }, s);
    return m;
}

// As transformers' MixtralRMSNorm: fp32 variance, weight * normalised.
at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& w, double eps)
{
    return w * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
}

at::Tensor rotateHalf(const at::Tensor& x)
{
    const int64_t half = x.size(-1) / 2;
    return at::cat({ -x.slice(-1, half), x.slice(-1, 0, half) }, -1);
}

struct Forward {
    at::Tensor logits; // [B*S, V]
    at::Tensor routerLogits; // [L*B*S, E]
};

// The forward pass over `ids` [B, S] (int64), transformers' Mixtral semantics.
Forward forward(const Model& m, const at::Tensor& ids)
{
    const DemoModelConfig& c = m.config;
    const int64_t B = ids.size(0), S = ids.size(1), H = c.hiddenSize, hd = c.headDim(), N = B * S;
    const int64_t E = c.numExperts, K = c.topK, rep = c.numHeads / c.numKvHeads;

    // RoPE tables (default rope: inv_freq = theta^(-2i/d), cos/sin of [freqs, freqs]).
    const at::Tensor invFreq
        = 1.0 / at::pow(c.ropeTheta, at::arange(0, hd, 2, at::kLong).to(at::kFloat) / static_cast<double>(hd));
    const at::Tensor freqs = at::outer(at::arange(S, at::kLong).to(at::kFloat), invFreq);
    const at::Tensor emb = at::cat({ freqs, freqs }, -1);
    const at::Tensor cos = emb.cos(), sin = emb.sin(); // [S, hd]
    const at::Tensor causal = at::ones({ S, S }, at::kBool).triu(1);

    at::Tensor x = m.embed.index_select(0, ids.reshape({ -1 })).view({ B, S, H });
    std::vector<at::Tensor> routerLogits;
    for (const LayerParams& L : m.layers) {
        at::Tensor h = rmsNorm(x, L.inputNorm, c.rmsNormEps);
        at::Tensor q = at::linear(h, L.q).view({ B, S, c.numHeads, hd }).transpose(1, 2);
        at::Tensor k = at::linear(h, L.k).view({ B, S, c.numKvHeads, hd }).transpose(1, 2);
        at::Tensor v = at::linear(h, L.v).view({ B, S, c.numKvHeads, hd }).transpose(1, 2);
        q = q * cos + rotateHalf(q) * sin;
        k = k * cos + rotateHalf(k) * sin;
        k = k.repeat_interleave(rep, 1);
        v = v.repeat_interleave(rep, 1);
        at::Tensor scores = at::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(hd)));
        scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
        at::Tensor attn = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({ B, S, c.numHeads * hd });
        x = x + at::linear(attn, L.o);

        const at::Tensor flat = rmsNorm(x, L.postNorm, c.rmsNormEps).reshape({ N, H });
        const at::Tensor rl = at::linear(flat, L.gate); // [N, E]
        routerLogits.push_back(rl);
        const at::Tensor probs = at::softmax(rl, -1);
        auto [topW, topI] = at::topk(probs, K, -1);
        topW = topW / topW.sum(-1, true);
        // Group the (token, slot) pairs by expert: one sort, then each expert runs on its rows.
        const at::Tensor flatIds = topI.reshape({ -1 });
        const at::Tensor order = at::argsort(flatIds);
        const at::Tensor counts = at::bincount(flatIds, {}, E).cpu();
        const at::Tensor tokenOf = at::div(order, K, "floor");
        const at::Tensor weightOf = topW.reshape({ -1 }).index_select(0, order);
        at::Tensor out = at::zeros({ N, H }, x.options());
        int64_t start = 0;
        const auto* cnt = counts.data_ptr<int64_t>();
        for (int64_t e = 0; e < E; ++e) {
            const int64_t n = cnt[e];
            if (n == 0)
                continue;
            const at::Tensor rows = tokenOf.slice(0, start, start + n);
            const at::Tensor xe = flat.index_select(0, rows);
            const at::Tensor ye = at::linear(at::silu(at::linear(xe, L.w1[static_cast<std::size_t>(e)]))
                    * at::linear(xe, L.w3[static_cast<std::size_t>(e)]),
                L.w2[static_cast<std::size_t>(e)]);
            out = out.index_add(0, rows, ye * weightOf.slice(0, start, start + n).unsqueeze(1));
            start += n;
        }
        x = x + out.view({ B, S, H });
    }
    const at::Tensor logits = at::linear(rmsNorm(x, m.finalNorm, c.rmsNormEps), m.lmHead).reshape({ N, c.vocabSize });
    return { logits, at::cat(routerLogits, 0) };
}

// transformers' load_balancing_loss_func (no attention mask): E * sum(f[k, e] * P[e]).
at::Tensor auxLoss(const at::Tensor& routerLogits, int64_t E, int K)
{
    const at::Tensor probs = at::softmax(routerLogits, -1);
    const at::Tensor topI = std::get<1>(at::topk(probs, K, -1));
    const at::Tensor mask = at::one_hot(topI, E).to(at::kFloat); // [N, K, E]
    const at::Tensor tokensPerExpert = mask.mean(0); // [K, E]
    const at::Tensor probPerExpert = probs.mean(0); // [E]
    return (tokensPerExpert * probPerExpert.unsqueeze(0)).sum() * static_cast<double>(E);
}

// Next-token cross-entropy within each row of ids [B, S]: mean over B*(S-1) tokens.
at::Tensor lmLoss(const at::Tensor& logits, const at::Tensor& ids)
{
    const int64_t B = ids.size(0), S = ids.size(1);
    const at::Tensor lg = logits.view({ B, S, -1 }).slice(1, 0, S - 1).reshape({ B * (S - 1), -1 });
    const at::Tensor target = ids.slice(1, 1).reshape({ -1 });
    return at::nll_loss(at::log_softmax(lg, -1), target);
}

at::Tensor toIds(const std::vector<const std::vector<int32_t>*>& seqs, int64_t seqLen)
{
    std::vector<int64_t> flat;
    flat.reserve(seqs.size() * static_cast<std::size_t>(seqLen));
    for (const auto* s : seqs)
        flat.insert(flat.end(), s->begin(), s->end());
    return at::from_blob(flat.data(), { static_cast<int64_t>(seqs.size()), seqLen }, at::kLong).clone();
}

DType checkedDtype(DType d)
{
    if (d != DType::F32 && d != DType::BF16)
        throw InputError("demo model dtype must be float32 or bfloat16");
    return d;
}

void saveModel(const Model& m, double auxCoef, DType dtype, const std::filesystem::path& dir,
    const std::vector<std::filesystem::path>& extraFiles, bool overwrite)
{
    CheckpointWriterOptions wo;
    wo.overwrite = overwrite;
    CheckpointWriter writer(dir, wo);
    writer.setConfig(nlohmann::json::parse(demoModelConfigJson(m.config, auxCoef, dtype)));
    nlohmann::ordered_json gen;
    gen["bos_token_id"] = m.config.bosTokenId;
    gen["eos_token_id"] = m.config.eosTokenId;
    gen["transformers_version"] = "5.24.0";
    writer.addFile("generation_config.json", gen.dump(2) + "\n");
    for (const auto& f : extraFiles) {
        if (!std::filesystem::is_regular_file(f))
            throw InputError(f.string() + ": not a file (needed in the model directory)");
        writer.copyFile(f, f.filename().string());
    }
    for (const Param& p : m.params)
        writer.declare(p.name, dtype, p.value.sizes().vec());
    for (const Param& p : m.params) {
        const at::Tensor t = p.value.detach().to(dtype == DType::BF16 ? at::kBFloat16 : at::kFloat).contiguous();
        writer.write(p.name, { static_cast<const std::byte*>(t.data_ptr()), static_cast<std::size_t>(t.nbytes()) });
    }
    writer.finish();
}

Model loadModel(const std::filesystem::path& dir)
{
    const Checkpoint ckpt(dir);
    const nlohmann::json& cj = ckpt.config();
    const std::string source = (dir / "config.json").string();
    DemoModelConfig c;
    try {
        if (cj.at("model_type").get<std::string>() != "mixtral")
            throw InputError(source + ": model_type: expected \"mixtral\"");
        c.numLayers = cj.at("num_hidden_layers").get<int>();
        c.hiddenSize = cj.at("hidden_size").get<int64_t>();
        c.numHeads = cj.at("num_attention_heads").get<int>();
        c.numKvHeads = cj.at("num_key_value_heads").get<int>();
        c.numExperts = cj.at("num_local_experts").get<int>();
        c.topK = cj.at("num_experts_per_tok").get<int>();
        c.expertWidth = cj.at("intermediate_size").get<int64_t>();
        c.vocabSize = cj.at("vocab_size").get<int64_t>();
        c.ropeTheta = cj.at("rope_theta").get<double>();
        c.rmsNormEps = cj.at("rms_norm_eps").get<double>();
    } catch (const nlohmann::json::exception& e) {
        throw InputError(source + ": " + e.what());
    }
    Model m = initModel(c, 0);
    m.build(false);
    at::NoGradGuard noGrad;
    for (Param& p : m.params) {
        if (!ckpt.contains(p.name))
            throw InputError(dir.string() + ": missing tensor " + p.name);
        const TensorInfo& info = ckpt.info(p.name);
        if (info.shape != p.value.sizes().vec() || (info.dtype != DType::F32 && info.dtype != DType::BF16))
            throw InputError(dir.string() + ": tensor " + p.name + ": expected F32/BF16 of the config's shape");
        const auto bytes = ckpt.bytes(p.name);
        const at::Tensor raw = at::from_blob(
            const_cast<std::byte*>(bytes.data()), info.shape, info.dtype == DType::BF16 ? at::kBFloat16 : at::kFloat);
        p.value.copy_(raw.to(at::kFloat));
    }
    return m;
}

} // namespace

std::string demoModelConfigJson(const DemoModelConfig& c, double auxLossCoef, DType dtype)
{
    nlohmann::ordered_json j;
    j["architectures"] = { "MixtralForCausalLM" };
    j["model_type"] = "mixtral";
    j["vocab_size"] = c.vocabSize;
    j["hidden_size"] = c.hiddenSize;
    j["intermediate_size"] = c.expertWidth;
    j["num_hidden_layers"] = c.numLayers;
    j["num_attention_heads"] = c.numHeads;
    j["num_key_value_heads"] = c.numKvHeads;
    j["head_dim"] = c.headDim();
    j["hidden_act"] = "silu";
    j["max_position_embeddings"] = c.maxPositions;
    j["initializer_range"] = c.initStd;
    j["rms_norm_eps"] = c.rmsNormEps;
    j["rope_theta"] = c.ropeTheta;
    j["sliding_window"] = nullptr;
    j["attention_dropout"] = 0.0;
    j["num_local_experts"] = c.numExperts;
    j["num_experts_per_tok"] = c.topK;
    j["output_router_logits"] = false;
    j["router_aux_loss_coef"] = auxLossCoef;
    j["router_jitter_noise"] = 0.0;
    j["tie_word_embeddings"] = false;
    j["use_cache"] = true;
    j["bos_token_id"] = c.bosTokenId;
    j["eos_token_id"] = c.eosTokenId;
    j["torch_dtype"] = dtype == DType::BF16 ? "bfloat16" : "float32";
    j["transformers_version"] = "5.24.0";
    return j.dump(2) + "\n";
}

std::vector<std::vector<int32_t>> packDocuments(
    const std::vector<std::vector<int32_t>>& documents, int32_t bos, int64_t seqLen)
{
    std::vector<int32_t> stream;
    for (const auto& d : documents) {
        if (bos >= 0)
            stream.push_back(bos);
        stream.insert(stream.end(), d.begin(), d.end());
    }
    std::vector<std::vector<int32_t>> out;
    for (std::size_t at = 0; at + static_cast<std::size_t>(seqLen) <= stream.size();
         at += static_cast<std::size_t>(seqLen))
        out.emplace_back(stream.begin() + static_cast<std::ptrdiff_t>(at),
            stream.begin() + static_cast<std::ptrdiff_t>(at) + seqLen);
    return out;
}

TrainReport trainDemoModel(const TrainOptions& o, const std::vector<DomainSequences>& train,
    const std::vector<DomainSequences>& heldout, const std::filesystem::path& outDir,
    const std::vector<std::filesystem::path>& extraFiles, bool overwrite, const ProgressFn& progress,
    const StopToken* stop)
{
    checkedDtype(o.saveDtype);
    if (o.steps < 1 || o.batchSequences < 1 || o.seqLen < 2)
        throw InputError("train: steps, batch and sequence length must be positive (seq-len >= 2)");
    // Refused before minutes of training, not at the end (CheckpointWriter checks again).
    std::error_code ec;
    if (!overwrite && std::filesystem::exists(outDir, ec) && !std::filesystem::is_empty(outDir, ec))
        throw RequestError("overwrite", outDir.string() + ": output directory is not empty and is not replaced");
    // Every sequence, training and held-out, is seq-len tokens of the vocabulary.
    auto check = [&](const std::vector<DomainSequences>& set, const char* split) {
        for (const auto& d : set)
            for (const auto& s : d.sequences) {
                if (static_cast<int64_t>(s.size()) != o.seqLen)
                    throw InputError(std::string("train: ") + split + " domain " + d.domain
                        + " has a sequence of another length than seq-len");
                for (int32_t t : s)
                    if (t < 0 || t >= o.model.vocabSize)
                        throw InputError(std::string("train: ") + split + " domain " + d.domain + ": token id "
                            + std::to_string(t) + " outside the vocabulary of " + std::to_string(o.model.vocabSize));
            }
    };
    check(train, "training");
    check(heldout, "held-out");
    std::vector<const std::vector<int32_t>*> pool;
    std::vector<int64_t> unigram(static_cast<std::size_t>(o.model.vocabSize), 1); // add-one
    for (const auto& d : train)
        for (const auto& s : d.sequences) {
            for (int32_t t : s)
                ++unigram[static_cast<std::size_t>(t)];
            pool.push_back(&s);
        }
    if (pool.empty())
        throw InputError("train: no training sequences");

    const auto t0 = std::chrono::steady_clock::now();
    // The BLAS single-threaded while ATen's threads run the ops: one pool at a time
    // (runtime/thread_pools.h); both restored when training ends.
    const ThreadScope threads(o.threads, 1);
    Model m = initModel(o.model, o.seed);
    m.build(true);
    TrainReport report;
    for (const Param& p : m.params)
        report.parameters += p.value.numel();

    std::vector<at::Tensor> adamM, adamV;
    {
        at::NoGradGuard noGrad;
        for (const Param& p : m.params) {
            adamM.push_back(at::zeros_like(p.value));
            adamV.push_back(at::zeros_like(p.value));
        }
    }
    SplitMix64 rng(o.seed * 0x9e3779b97f4a7c15ull + 7);
    const int64_t tokensPerStep = static_cast<int64_t>(o.batchSequences) * o.seqLen;
    const int64_t totalTokens = tokensPerStep * o.steps;
    double lossSum = 0.0, auxSum = 0.0;
    int tail = 0;
    for (int step = 0; step < o.steps; ++step) {
        if (stop && stop->stopRequested())
            throw Cancelled();
        std::vector<const std::vector<int32_t>*> batch;
        batch.reserve(static_cast<std::size_t>(o.batchSequences));
        for (int b = 0; b < o.batchSequences; ++b)
            batch.push_back(pool[rng.below(pool.size())]);
        const at::Tensor ids = toIds(batch, o.seqLen);
        const Forward f = forward(m, ids);
        const at::Tensor ce = lmLoss(f.logits, ids);
        const at::Tensor aux = auxLoss(f.routerLogits, o.model.numExperts, o.model.topK);
        const at::Tensor loss = ce + o.auxLossCoef * aux;
        for (Param& p : m.params)
            p.value.mutable_grad() = at::Tensor();
        loss.backward();

        const double ceValue = ce.item<double>();
        if (step == 0)
            report.firstLoss = ceValue;
        if (step >= o.steps - 50) {
            lossSum += ceValue;
            auxSum += aux.item<double>();
            ++tail;
        }
        // LR: linear warmup, then cosine to minLearningRateRatio * peak.
        double lr = o.learningRate;
        if (step < o.warmupSteps) {
            lr *= static_cast<double>(step + 1) / o.warmupSteps;
        } else {
            const double progressFrac
                = static_cast<double>(step - o.warmupSteps) / std::max(1, o.steps - o.warmupSteps);
            lr *= o.minLearningRateRatio + (1.0 - o.minLearningRateRatio) * 0.5 * (1.0 + std::cos(M_PI * progressFrac));
        }
        {
            at::NoGradGuard noGrad;
            double sq = 0.0;
            for (const Param& p : m.params)
                if (p.value.grad().defined())
                    sq += p.value.grad().pow(2).sum().item<double>();
            const double norm = std::sqrt(sq);
            const double scale = norm > o.clipNorm ? o.clipNorm / (norm + 1e-6) : 1.0;
            const double c1 = 1.0 - std::pow(o.beta1, step + 1), c2 = 1.0 - std::pow(o.beta2, step + 1);
            for (std::size_t i = 0; i < m.params.size(); ++i) {
                Param& p = m.params[i];
                if (!p.value.grad().defined())
                    continue; // an expert no token reached this step
                const at::Tensor g = p.value.grad() * scale;
                adamM[i].mul_(o.beta1).add_(g, 1.0 - o.beta1);
                adamV[i].mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
                if (p.decay)
                    p.value.mul_(1.0 - lr * o.weightDecay);
                const at::Tensor denom = (adamV[i] / c2).sqrt_().add_(o.adamEps);
                p.value.addcdiv_(adamM[i], denom, -lr / c1);
            }
        }
        report.trainedTokens += tokensPerStep;
        if (progress) {
            char stage[96];
            std::snprintf(
                stage, sizeof stage, "step %d/%d loss %.3f aux %.3f", step + 1, o.steps, ceValue, aux.item<double>());
            if (!progress({ stage, report.trainedTokens, totalTokens }))
                throw Cancelled();
        }
    }
    report.steps = o.steps;
    report.finalTrainLoss = lossSum / std::max(1, tail);
    report.finalAuxLoss = auxSum / std::max(1, tail);

    // Held-out loss with the weights as they will be saved.
    at::NoGradGuard noGrad;
    if (o.saveDtype == DType::BF16)
        for (Param& p : m.params)
            p.value.copy_(p.value.to(at::kBFloat16).to(at::kFloat));
    double totalUnigramTokens = 0;
    for (int64_t c : unigram)
        totalUnigramTokens += static_cast<double>(c);
    double allLoss = 0.0, allUni = 0.0;
    int64_t allTokens = 0;
    for (const auto& d : heldout) {
        DomainLoss dl;
        dl.domain = d.domain;
        const std::size_t n = std::min(d.sequences.size(), static_cast<std::size_t>(o.heldoutSequences));
        for (std::size_t at0 = 0; at0 < n; at0 += 16) {
            std::vector<const std::vector<int32_t>*> batch;
            for (std::size_t i = at0; i < std::min(n, at0 + 16); ++i)
                batch.push_back(&d.sequences[i]);
            const at::Tensor ids = toIds(batch, o.seqLen);
            const int64_t predicted = static_cast<int64_t>(batch.size()) * (o.seqLen - 1);
            dl.loss += lmLoss(forward(m, ids).logits, ids).item<double>() * static_cast<double>(predicted);
            for (const auto* s : batch)
                for (std::size_t t = 1; t < s->size(); ++t)
                    dl.unigramLoss -= std::log(
                        static_cast<double>(unigram[static_cast<std::size_t>((*s)[t])]) / totalUnigramTokens);
            dl.tokens += predicted;
        }
        allLoss += dl.loss;
        allUni += dl.unigramLoss;
        allTokens += dl.tokens;
        if (dl.tokens > 0) {
            dl.loss /= static_cast<double>(dl.tokens);
            dl.unigramLoss /= static_cast<double>(dl.tokens);
        }
        report.domains.push_back(dl);
    }
    if (allTokens > 0) {
        report.heldoutLoss = allLoss / static_cast<double>(allTokens);
        report.unigramLoss = allUni / static_cast<double>(allTokens);
    }
    if (stop && stop->stopRequested())
        throw Cancelled();
    saveModel(m, o.auxLossCoef, o.saveDtype, outDir, extraFiles, overwrite);
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return report;
}

void writeInitialDemoModel(const DemoModelConfig& config, uint64_t seed, const std::filesystem::path& outDir)
{
    Model m = initModel(config, seed);
    m.build(false);
    saveModel(m, 0.01, DType::F32, outDir, {}, true);
}

std::vector<float> demoModelLogits(
    const std::filesystem::path& modelDir, std::span<const int32_t> tokens, int64_t seqLen)
{
    if (seqLen < 1 || tokens.size() % static_cast<std::size_t>(seqLen) != 0)
        throw InputError("demoModelLogits: token count must be a multiple of seq-len");
    const Model m = loadModel(modelDir);
    at::NoGradGuard noGrad;
    std::vector<int64_t> ids(tokens.begin(), tokens.end());
    const at::Tensor t
        = at::from_blob(ids.data(), { static_cast<int64_t>(ids.size()) / seqLen, seqLen }, at::kLong).clone();
    const at::Tensor logits = forward(m, t).logits.contiguous();
    return { logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel() };
}

double loadBalancingLoss(std::span<const float> routerLogits, int64_t numExperts, int topK)
{
    if (numExperts < 1 || routerLogits.size() % static_cast<std::size_t>(numExperts) != 0)
        throw InputError("loadBalancingLoss: logits are not [N, numExperts]");
    std::vector<float> copy(routerLogits.begin(), routerLogits.end());
    const at::Tensor t
        = at::from_blob(copy.data(), { static_cast<int64_t>(copy.size()) / numExperts, numExperts }, at::kFloat);
    return auxLoss(t, numExperts, topK).item<double>();
}

} // namespace moeatlas
