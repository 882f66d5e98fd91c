#include "model/blocks.h"

#include "model/gated_delta.h"
#include "runtime/thread_pools.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace moeatlas {

namespace {

// --- Splitting the work across ATen's threads ----------------------------------------------------
//
// With several ATen (OpenMP) threads and a single-threaded BLAS -- what the executor sets up:
// OpenBLAS' own pthreads spin after every GEMM and, on a small machine, take the cores that ATen's
// OpenMP workers need between GEMMs; a BLAS without a thread control (reference BLAS, BLIS as
// libblas.so.3) runs each call on one thread anyway -- the blocks split their matrix products themselves: experts,
// sequences or heads, and row blocks of the projections are tasks that ATen's threads pull one at a
// time. Each task runs the same single-threaded GEMM and element-wise ops on its subset. Experts,
// sequences and heads are GEMMs of the other path's shapes, so their outputs are the same numbers; a row
// block of a projection is a GEMM of fewer rows, which the BLAS may block, and so sum, differently from
// the whole (OpenBLAS does under some of its CPU-specific kernels, e.g. Haswell/Zen), so there the two paths
// agree up to the order of fp32 sums: bit for bit only where the kernel sums a row the same way
// whatever the row count (measured so on one AVX-512 machine, docs/performance.md).

// at::parallel_for is a template whose OpenMP code is only compiled in with -fopenmp; without it (the
// engine is built without: runtime/thread_pools.h says why), it runs inline on the calling thread. Then
// the OpenMP runtime LibTorch itself uses is called directly (gompParallel), and omp_in_parallel()
// inside it keeps ATen's own ops serial, as in an at::parallel_for body.
bool canRunOnThreads()
{
#ifdef _OPENMP
    return true;
#else
    return gompParallel() != nullptr;
#endif
}

// True when the blocks split their products across ATen's threads (see above). Never while autograd
// records (gradient passes): the split paths use out= and in-place ops on shared buffers.
bool splitWork(const at::Tensor& x)
{
    return x.device().is_cpu() && at::get_num_threads() > 1 && !at::in_parallel_region() && blasThreads() == 1
        && canRunOnThreads() && !at::GradMode::is_enabled();
}

// Calls worker() once on each of ATen's intra-op threads, concurrently, with the caller's LibTorch
// thread-local state (inference mode, grad mode); an exception thrown by one is rethrown here once
// all have returned.
template <class F> void onEachThread(const F& worker)
{
    struct Context {
        const F* worker = nullptr;
        at::ThreadLocalState state;
        std::atomic_flag failed = ATOMIC_FLAG_INIT;
        std::exception_ptr error;
    } ctx;
    ctx.worker = &worker;
    auto body = [](void* p) {
        auto& c = *static_cast<Context*>(p);
        try {
            const at::ThreadLocalStateGuard guard(c.state);
            (*c.worker)();
        } catch (...) {
            if (!c.failed.test_and_set())
                c.error = std::current_exception();
        }
    };
#ifdef _OPENMP
    const int64_t threads = at::get_num_threads();
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t)
            body(&ctx);
    });
#else
    gompParallel()(body, &ctx, static_cast<unsigned>(at::get_num_threads()), 0);
#endif
    if (ctx.error)
        std::rethrow_exception(ctx.error);
}

// Calls task(i) for every i in [0, count) on ATen's threads, each thread taking the next index as it
// becomes free (a thread the machine's other work slows down simply takes fewer). setup() runs once
// per thread before its first task and returns what that thread's tasks share (scratch buffers).
template <class Setup, class Task> void parallelTasks(int64_t count, const Setup& setup, const Task& task)
{
    std::atomic<int64_t> next { 0 };
    onEachThread([&] {
        int64_t i = next.fetch_add(1);
        if (i >= count)
            return;
        auto local = setup();
        for (; i < count; i = next.fetch_add(1))
            task(i, local);
    });
}

// The [N*K, H] rows of routed expert outputs of moeForward, kept between calls (128 MiB for 4096
// tokens of the benchmark model): a fresh buffer of that size costs ~0.1 s of page faults per call on
// a VM, a fifth of the MoE block's time. Reused only when no tensor from an earlier call still holds it.
at::Tensor routedRowsBuffer(int64_t rows, int64_t cols, const at::TensorOptions& options)
{
    static thread_local at::Tensor cached;
    const int64_t need = rows * cols;
    if (!cached.defined() || cached.storage().use_count() > 1 || cached.numel() < need
        || cached.dtype() != options.dtype() || cached.device() != options.device()) {
        cached = at::Tensor(); // release the old one first
        cached = at::empty({ need }, options);
    }
    return cached.narrow(0, 0, need).view({ rows, cols });
}

at::Tensor linear(const at::Tensor& x, const Linear& l)
{
    const int64_t threads = at::get_num_threads();
    constexpr int64_t minRows = 128;
    if (x.dim() != 2 || x.size(0) < 2 * minRows || !splitWork(x))
        return l.bias.defined() ? at::linear(x, l.weight, l.bias) : at::linear(x, l.weight);
    // at::linear on a 2-D input is addmm(bias, x, W^T) or mm(x, W^T): the same calls on row blocks.
    const int64_t rows = x.size(0);
    const int64_t blocks = std::min(rows / minRows, 4 * threads), chunk = (rows + blocks - 1) / blocks;
    at::Tensor out = at::empty({ rows, l.weight.size(0) }, x.options());
    const at::Tensor wt = l.weight.t();
    parallelTasks(
        blocks, [] { return 0; },
        [&](int64_t b, int) {
            const int64_t r0 = b * chunk, n = std::min(chunk, rows - r0);
            if (n <= 0)
                return;
            at::Tensor o = out.narrow(0, r0, n);
            if (l.bias.defined())
                at::addmm_out(o, l.bias, x.narrow(0, r0, n), wt);
            else
                at::mm_out(o, x.narrow(0, r0, n), wt);
        });
    return out;
}

at::Tensor rotateHalf(const at::Tensor& x)
{
    const int64_t half = x.size(-1) / 2;
    return at::cat({ -x.narrow(-1, half, half), x.narrow(-1, 0, half) }, -1);
}

// Additive mask [S, S]: 0 where key j is visible from query i, the dtype's lowest value elsewhere
// (transformers uses finfo.min rather than -inf, so fully masked rows cannot produce NaN).
at::Tensor causalMask(int64_t seqLen, std::optional<int64_t> window, const at::TensorOptions& options)
{
    at::Tensor i = at::arange(seqLen, options.dtype(at::kLong)).unsqueeze(1);
    at::Tensor j = at::arange(seqLen, options.dtype(at::kLong)).unsqueeze(0);
    at::Tensor visible = j <= i;
    if (window)
        visible = visible & (j > i - *window);
    const double lowest = options.dtype() == at::kFloat ? static_cast<double>(std::numeric_limits<float>::lowest())
        : options.dtype() == at::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                           : static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    return at::zeros({ seqLen, seqLen }, options).masked_fill(visible.logical_not(), lowest);
}

// Attention probabilities with learned sinks (gpt_oss): each head's sink logit joins its rows as one more
// column, the row's maximum is subtracted, the softmax runs in the scores' dtype and the sink's column is
// dropped. scores [heads, S, S], sinks [heads].
at::Tensor sinkSoftmax(const at::Tensor& scores, const at::Tensor& sinks)
{
    const int64_t heads = scores.size(0), S = scores.size(1);
    at::Tensor combined
        = at::cat({ scores, sinks.to(scores.scalar_type()).view({ heads, 1, 1 }).expand({ heads, S, 1 }) }, -1);
    combined = combined - std::get<0>(combined.max(-1, /*keepdim=*/true));
    return at::softmax(combined, -1, combined.scalar_type()).narrow(-1, 0, S);
}

// The clamped SwiGLU of gpt_oss' experts on gu = [gate | up] ([c, 2w]): gate clamped above at the limit,
// up clamped to [-limit, limit], (up + 1) * gate * sigmoid(alpha * gate).
at::Tensor clampedSwiglu(const ModelSpec& spec, const at::Tensor& gu, int64_t width)
{
    const at::Tensor gate = gu.narrow(1, 0, width).clamp_max(spec.swigluLimit);
    const at::Tensor up = gu.narrow(1, width, width).clamp(-spec.swigluLimit, spec.swigluLimit);
    return (up + 1) * (gate * at::sigmoid(gate * spec.swigluAlpha));
}

// Adds sum over rows of |h| ([tokens, I] activations of expert e) into row e of `sum` ([E, I] float64).
void addUnitActivation(const at::Tensor& sum, int64_t e, const at::Tensor& h)
{
    const at::NoGradGuard noGrad;
    sum[e].add_(h.detach().abs().sum(0).to(sum.device(), at::kDouble));
}

// Adds the outputs y ([c, H]) of expert e for the tokens idx ([c]) into row e of options.expertOutputSum,
// those of the tokens options.expertOutputTokens selects.
void addExpertOutput(const MoeOptions& options, int64_t e, const at::Tensor& idx, const at::Tensor& y)
{
    if (!options.expertOutputSum.defined())
        return;
    const at::Tensor keep = options.expertOutputTokens.index_select(0, idx).to(at::kDouble).unsqueeze(1);
    options.expertOutputSum[e].add_((y.to(at::kDouble) * keep).sum(0));
}

} // namespace

at::Tensor routerLogits(const LayerWeights& w, const at::Tensor& x)
{
    if (w.routerFloat32) // the sigmoid router: F.linear(x.float(), W.float()) whatever the hidden dtype
        return at::linear(x.to(at::kFloat), w.router.to(at::kFloat));
    return linear(x, Linear { w.router, w.routerBias });
}

namespace {

// The DeepSeek-style router on tensors (RouterSpec; group_router.h is the plain reference): `logits` [N, E]
// fp32 (pruned experts and ungrouped choices are masked in the choice scores only), `K` slots. Returns the
// chosen ids (by decreasing choice score) and the sigmoid scores [N, E] the weights are gathered from.
std::pair<at::Tensor, at::Tensor> sigmoidTopk(
    const RouterSpec& r, const at::Tensor& logits, const at::Tensor& bias, const at::Tensor& kept, int64_t K)
{
    at::Tensor scores = at::sigmoid(logits);
    at::Tensor choice = bias.defined() ? scores + bias : scores;
    if (kept.defined())
        choice = choice.masked_fill(kept.logical_not(), -INFINITY);
    if (r.numGroups > 1) {
        const int64_t N = logits.size(0), G = r.numGroups, size = r.groupSize();
        at::Tensor groupScores = std::get<0>(at::topk(choice.view({ N, G, size }), 2, -1)).sum(-1);
        at::Tensor groupIdx = std::get<1>(at::topk(groupScores, r.topkGroup, -1));
        at::Tensor groupKept = at::zeros({ N, G }, at::TensorOptions().dtype(at::kBool).device(logits.device()))
                                   .scatter_(1, groupIdx, true);
        choice = choice.masked_fill(
            groupKept.unsqueeze(-1).expand({ N, G, size }).reshape({ N, -1 }).logical_not(), -INFINITY);
    }
    return { std::get<1>(at::topk(choice, K, -1)), scores };
}

} // namespace

RotaryCache buildRotaryCache(const ModelSpec& spec, int64_t seqLen, const at::TensorOptions& options)
{
    const RopeTables t = computeRopeTables(spec, seqLen);
    at::Tensor invFreq
        = at::from_blob(const_cast<float*>(t.invFreq.data()), { static_cast<int64_t>(t.invFreq.size()) }, at::kFloat)
              .to(options.device(), at::kFloat, false, true);
    at::Tensor pos = at::arange(seqLen, at::TensorOptions().dtype(at::kFloat).device(options.device()));
    at::Tensor freqs = pos.unsqueeze(1) * invFreq.unsqueeze(0);
    at::Tensor emb = at::cat({ freqs, freqs }, -1);
    RotaryCache c;
    c.cos = (emb.cos() * t.attentionScaling).to(options.dtype());
    c.sin = (emb.sin() * t.attentionScaling).to(options.dtype());
    c.seqLen = seqLen;
    return c;
}

at::Tensor rmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps)
{
    at::Tensor h = x.to(at::kFloat);
    at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
    h = h * at::rsqrt(variance + eps);
    // Weights kept in float32 (gpt_oss' norms; a zero-centred norm's 1 + w, layer_weights.cpp): the product
    // is taken in fp32 and rounded once to the input's dtype, as transformers does for both.
    if (weight.scalar_type() != x.scalar_type())
        return (h * weight).to(x.scalar_type());
    return weight * h.to(x.scalar_type());
}

at::Tensor attention(const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, int64_t numSeqs,
    const RotaryCache& rope, bool slidingWindow)
{
    if (w.deltaNet.defined()) // a linear-attention layer of Qwen3.5-MoE
        return gatedDeltaNet(spec, w.deltaNet, x, numSeqs);
    const int64_t tokens = x.size(0), S = tokens / numSeqs, hd = spec.headDim;
    const int64_t nh = spec.numHeads, nkv = spec.numKvHeads;
    at::Tensor q = linear(x, w.q), k = linear(x, w.k), v = linear(x, w.v);
    // Gated attention (Qwen3.5-MoE): q_proj gives [query_h; gate_h] per head; the output is
    // multiplied by sigmoid(gate) before o_proj.
    at::Tensor gate;
    if (spec.attnOutputGate) {
        const at::Tensor qg = q.view({ tokens, nh, 2 * hd });
        gate = qg.narrow(2, hd, hd).reshape({ tokens, nh * hd });
        q = qg.narrow(2, 0, hd).reshape({ tokens, nh * hd });
    }
    const auto project = [&](const at::Tensor& context) {
        return linear(gate.defined() ? context * at::sigmoid(gate) : context, w.o);
    };
    if (spec.qkNorm == QkNorm::Full) {
        q = rmsNorm(q, w.qNorm, spec.rmsNormEps);
        k = rmsNorm(k, w.kNorm, spec.rmsNormEps);
    }
    if (spec.clipQkv) {
        q = q.clamp(-*spec.clipQkv, *spec.clipQkv);
        k = k.clamp(-*spec.clipQkv, *spec.clipQkv);
        v = v.clamp(-*spec.clipQkv, *spec.clipQkv);
    }
    q = q.view({ numSeqs, S, nh, hd });
    k = k.view({ numSeqs, S, nkv, hd });
    v = v.view({ numSeqs, S, nkv, hd });
    if (spec.qkNorm == QkNorm::PerHead) {
        q = rmsNorm(q, w.qNorm, spec.rmsNormEps);
        k = rmsNorm(k, w.kNorm, spec.rmsNormEps);
    }
    q = q.transpose(1, 2); // [B, nh, S, hd]
    k = k.transpose(1, 2);
    v = v.transpose(1, 2);
    const at::Tensor cos = rope.cos.narrow(0, 0, S), sin = rope.sin.narrow(0, 0, S);
    const int64_t rotary = cos.size(-1);
    if (rotary == hd) {
        q = q * cos + rotateHalf(q) * sin;
        k = k * cos + rotateHalf(k) * sin;
    } else { // partial rotary: the first `rotary` dimensions turn, the rest pass through
        const auto turn = [&](const at::Tensor& t) {
            const at::Tensor r = t.narrow(-1, 0, rotary);
            return at::cat({ r * cos + rotateHalf(r) * sin, t.narrow(-1, rotary, hd - rotary) }, -1);
        };
        q = turn(q);
        k = turn(k);
    }
    const int64_t groups = nh / nkv;
    if (groups > 1) {
        k = k.unsqueeze(2).expand({ numSeqs, nkv, groups, S, hd }).reshape({ numSeqs, nh, S, hd });
        v = v.unsqueeze(2).expand({ numSeqs, nkv, groups, S, hd }).reshape({ numSeqs, nh, S, hd });
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const at::Tensor mask = causalMask(S, slidingWindow ? spec.slidingWindow : std::nullopt, q.options());
    // One sequence at a time bounds the score matrix to [nh, S, S].
    at::Tensor out = at::empty({ numSeqs, S, nh * hd }, x.options());
    if (!splitWork(x)) {
        for (int64_t b = 0; b < numSeqs; ++b) {
            at::Tensor scores = at::matmul(q[b], k[b].transpose(1, 2)) * scale + mask;
            at::Tensor probs = w.sinks.defined() ? sinkSoftmax(scores, w.sinks).to(q.scalar_type())
                                                 : at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
            out[b].copy_(at::matmul(probs, v[b]).transpose(0, 1).reshape({ S, nh * hd }));
        }
        return project(out.view({ tokens, nh * hd }));
    }
    // Sequences (and, when there are fewer sequences than threads, groups of heads) in parallel;
    // heads are independent, so a group of heads gives the same numbers as all of them at once.
    const int64_t threads = at::get_num_threads();
    const int64_t parts = numSeqs >= threads ? 1 : std::min<int64_t>(nh, (threads + numSeqs - 1) / numSeqs);
    const int64_t headsPerPart = (nh + parts - 1) / parts;
    // Per-thread buffers for the scores, probabilities and context of one task, written with the
    // out= and in-place forms of the same ops (fresh [heads, S, S] temporaries cost page faults).
    const bool fp32 = x.scalar_type() == at::kFloat;
    struct Scratch {
        at::Tensor scores, probs, context;
    };
    auto setup = [&] {
        return Scratch { at::empty({ headsPerPart, S, S }, q.options()),
            fp32 ? at::empty({ headsPerPart, S, S }, q.options()) : at::Tensor(),
            at::empty({ headsPerPart, S, hd }, q.options()) };
    };
    parallelTasks(numSeqs * parts, setup, [&](int64_t item, Scratch& buf) {
        const int64_t b = item / parts, h0 = (item % parts) * headsPerPart;
        const int64_t hn = std::min(headsPerPart, nh - h0);
        if (hn <= 0)
            return;
        at::Tensor qb = q[b].narrow(0, h0, hn), kb = k[b].narrow(0, h0, hn), vb = v[b].narrow(0, h0, hn);
        at::Tensor scores = buf.scores.narrow(0, 0, hn), context = buf.context.narrow(0, 0, hn);
        at::matmul_out(scores, qb, kb.transpose(1, 2));
        scores.mul_(scale).add_(mask);
        at::Tensor probs;
        if (w.sinks.defined()) {
            probs = sinkSoftmax(scores, w.sinks.narrow(0, h0, hn)).to(q.scalar_type());
        } else if (fp32) {
            probs = buf.probs.narrow(0, 0, hn);
            at::softmax_out(probs, scores, -1, at::kFloat);
        } else {
            probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
        }
        at::matmul_out(context, probs, vb);
        out[b].view({ S, nh, hd }).narrow(1, h0, hn).copy_(context.transpose(0, 1));
    });
    return project(out.view({ tokens, nh * hd }));
}

at::Tensor denseMlp(const LayerWeights& w, const at::Tensor& x)
{
    return linear(at::silu(linear(x, w.mlpGate)) * linear(x, w.mlpUp), w.mlpDown);
}

namespace {

// The k of every token under a dynamic rule ([N] int64, on x's device): checkpoint/routing_rule.h,
// computed as ruleTokenK computes it. `logits`: the (masked) router logits; `sorted`: the top maxK
// routing probabilities [N, maxK] fp32, descending.
at::Tensor tokenKTensor(const RoutingRule& rule, const at::Tensor& logits, const at::Tensor& sorted, double threshold)
{
    const int64_t K = sorted.size(1);
    at::Tensor k;
    switch (rule.kind) {
    case RoutingRule::Kind::ProbMoe:
        k = logits.gt(0).sum(-1);
        break;
    case RoutingRule::Kind::TopP:
        // The slots whose mass before them is < P: 1 + #(inclusive prefix sums of the first K - 1 < P).
        k = at::cumsum(sorted.to(at::kDouble), -1).narrow(1, 0, K - 1).lt(rule.p).sum(-1) + 1;
        break;
    case RoutingRule::Kind::Threshold:
        k = sorted.to(at::kDouble).ge(threshold).sum(-1);
        break;
    default:
        throw std::invalid_argument("tokenKTensor: '" + rule.name() + "' gives every token the same k");
    }
    return k.clamp(rule.kMin, rule.kMax);
}

} // namespace

at::Tensor moeForward(
    const ModelSpec& spec, const LayerWeights& w, const at::Tensor& x, const MoeOptions& options, RoutingRecord* record)
{
    const RoutingRule* rule = options.routing && !options.routing->isModel() ? options.routing : nullptr;
    const int64_t N = x.size(0), E = spec.router.numExperts;
    // Slots gathered per token: the model's top-k, or the most a rule gives.
    const int64_t K = rule ? rule->maxK(spec.router.topK) : spec.router.topK;
    if (K > E)
        throw std::invalid_argument("moeForward: routing '" + rule->name() + "' gathers " + std::to_string(K)
            + " experts of " + std::to_string(E));
    // Sliced for a dimension plan, or loaded so from a ragged checkpoint.
    const RaggedExperts* ragged = options.ragged ? options.ragged : w.ragged.empty() ? nullptr : &w.ragged;
    // The unit mask and activation sums are [E, I]: they only go with per-expert weights of full width
    // (the Fisher pass, whose per-expert weight leaves keep each expert's gradient its own).
    if (ragged && (options.unitMask.defined() || options.unitActivationSum.defined())) {
        const at::Tensor& full = options.unitMask.defined() ? options.unitMask : options.unitActivationSum;
        for (const int64_t width : ragged->widths)
            if (width != full.size(1))
                throw std::invalid_argument("moeForward: a unit mask or unit activation sums (full width) cannot be "
                                            "combined with experts cut to fewer units");
    }
    if (ragged && ragged->numExperts() != E)
        throw std::invalid_argument("moeForward: ragged experts of layer " + std::to_string(w.layer) + " hold "
            + std::to_string(ragged->numExperts()) + " experts, the router " + std::to_string(E));
    // Expert e runs with its own width and weights: all I units, or the kept ones of a ragged layer.
    const int64_t I = ragged ? 0 : w.down.size(2);
    const int64_t widest = ragged ? ragged->maxWidth() : I;
    const auto widthOf = [&](int64_t e) { return ragged ? ragged->widths[static_cast<std::size_t>(e)] : I; };
    const auto gateUpOf = [&](int64_t e) { return ragged ? ragged->gateUp[static_cast<std::size_t>(e)] : w.gateUp[e]; };
    const auto downOf = [&](int64_t e) { return ragged ? ragged->down[static_cast<std::size_t>(e)] : w.down[e]; };
    // gpt_oss expert biases (undefined for the other architectures).
    const auto gateUpBiasOf = [&](int64_t e) {
        if (ragged)
            return ragged->gateUpBias.empty() ? at::Tensor() : ragged->gateUpBias[static_cast<std::size_t>(e)];
        return w.gateUpBias.defined() ? w.gateUpBias[e] : at::Tensor();
    };
    const auto downBiasOf = [&](int64_t e) {
        if (ragged)
            return ragged->downBias.empty() ? at::Tensor() : ragged->downBias[static_cast<std::size_t>(e)];
        return w.downBias.defined() ? w.downBias[e] : at::Tensor();
    };
    const bool fp32 = x.scalar_type() == at::kFloat;
    // transformers computes the router in the hidden dtype; observers get an fp32 computation.
    at::Tensor logits = routerLogits(w, x);
    at::Tensor logits32 = fp32 || w.routerFloat32
        ? logits
        : at::linear(x.to(at::kFloat), w.router.to(at::kFloat),
            w.routerBias.defined() ? w.routerBias.to(at::kFloat) : at::Tensor());
    const bool speculative = options.speculativeLogits.defined() || options.speculativeIds.defined();
    if (speculative && (rule || (options.speculativeLogits.defined() && options.speculativeIds.defined())))
        throw std::invalid_argument("moeForward: speculative execution takes predicted logits or ids, with the "
                                    "model's own top-k");
    at::Tensor routingLogits = options.speculativeLogits.defined() ? options.speculativeLogits : logits;
    const RouterSpec& router = spec.router;
    if (router.sigmoid() && rule && !rule->fixed())
        throw std::invalid_argument("moeForward: routing '" + rule->name()
            + "' gives each token its own k from softmax probabilities; a sigmoid router (" + spec.modelType
            + ") takes the model's top-k or top-k:K");
    if (options.keptExperts.defined() && !router.sigmoid())
        routingLogits = routingLogits.masked_fill(options.keptExperts.logical_not(), -INFINITY);
    at::Tensor probs, topVal, topIdx;
    if (router.sigmoid()) {
        // Scores, selection and weights in fp32 (Glm4MoeTopkRouter); the bias picks, the raw scores weigh.
        auto [ids, scores]
            = sigmoidTopk(router, routingLogits.to(at::kFloat), w.correctionBias, options.keptExperts, K);
        probs = scores;
        topIdx = ids;
        topVal = scores.gather(1, topIdx);
    } else {
        probs = at::softmax(routingLogits, -1, at::kFloat);
        std::tie(topVal, topIdx) = at::topk(probs, K, -1);
    }
    if (spec.router.softmaxAfterTopk) {
        // gpt_oss: the top-k of the logits themselves (as transformers picks them, ties included).
        topIdx = std::get<1>(at::topk(routingLogits, K, -1));
        topVal = probs.gather(1, topIdx);
    }
    if (options.speculativeIds.defined()) {
        topIdx = options.speculativeIds;
        topVal = probs.gather(1, topIdx);
    }
    // A dynamic rule: each token keeps its first k slots; the others get weight 0 and are not run.
    at::Tensor tokenK, slotKept;
    if (rule && !rule->fixed()) {
        tokenK = tokenKTensor(*rule, routingLogits, topVal, options.threshold);
        slotKept = at::arange(K, tokenK.options()).unsqueeze(0).lt(tokenK.unsqueeze(1));
        topVal = topVal.masked_fill(slotKept.logical_not(), 0.0f);
    }
    if (spec.router.softmaxAfterTopk) {
        // Softmax over the chosen (kept) slots' logits, in the logits' dtype: transformers' GptOssTopKRouter.
        at::Tensor chosen = routingLogits.gather(1, topIdx);
        if (slotKept.defined())
            chosen = chosen.masked_fill(slotKept.logical_not(), -INFINITY);
        topVal = at::softmax(chosen, -1, chosen.scalar_type()).to(at::kFloat);
    } else if (router.sigmoid()) {
        if (router.normTopkProb)
            topVal = topVal / (topVal.sum(-1, /*keepdim=*/true) + 1e-20);
        topVal = topVal * router.scalingFactor;
    } else if (spec.router.normTopkProb) {
        topVal = topVal / topVal.sum(-1, /*keepdim=*/true);
    }
    if (options.expertsUsed)
        *options.expertsUsed = (tokenK.defined() ? tokenK : at::full({ N }, K, at::kLong)).to(at::kCPU, at::kLong);
    // Mixtral multiplies expert outputs by fp32 weights; the others cast the weights to the
    // hidden dtype first. Both then accumulate in the hidden dtype.
    // The sigmoid router's weights are fp32 too (Glm4MoeExperts multiplies them in, then casts).
    at::Tensor mixWeights
        = spec.arch == Architecture::Mixtral || router.sigmoid() ? topVal : topVal.to(x.scalar_type());

    // The routed (token, slot) pairs, flattened: all N * K, or the kept slots of a dynamic rule.
    at::Tensor slotOf; // position of each routed pair in [N * K]; undefined = the identity
    at::Tensor flatIds = topIdx.reshape({ -1 });
    at::Tensor flatWeights = mixWeights.reshape({ -1 });
    if (slotKept.defined()) {
        slotOf = slotKept.reshape({ -1 }).nonzero().squeeze(1);
        flatIds = flatIds.index_select(0, slotOf);
        flatWeights = flatWeights.index_select(0, slotOf);
    }
    const int64_t M = flatIds.size(0);
    at::Tensor order = at::argsort(flatIds);
    at::Tensor sortedSlots = slotOf.defined() ? slotOf.index_select(0, order) : order;
    at::Tensor tokenOf = at::div(sortedSlots, K, "floor");
    at::Tensor sortedWeights = flatWeights.index_select(0, order);
    at::Tensor counts = at::bincount(flatIds, {}, E).to(at::kCPU);
    const int64_t* countPtr = counts.data_ptr<int64_t>();

    at::Tensor out = at::zeros_like(x);
    at::Tensor sortedNorms;
    if (options.recordExpertNorms)
        sortedNorms = at::empty({ M }, x.options().dtype(at::kFloat));
    if (splitWork(x)) {
        // Experts in parallel; each writes its weighted outputs into its rows of `weighted` (expert
        // order). One index_add_ then accumulates them in that order, which is the order in which the
        // per-expert index_add_ of the other path accumulates, so every sum is the same.
        std::vector<int64_t> rowBegin(static_cast<std::size_t>(E) + 1, 0);
        int64_t most = 0;
        for (int64_t e = 0; e < E; ++e) {
            rowBegin[static_cast<std::size_t>(e) + 1] = rowBegin[static_cast<std::size_t>(e)] + countPtr[e];
            most = std::max(most, countPtr[e]);
        }
        const bool sameType = sortedWeights.scalar_type() == x.scalar_type();
        const int64_t H = x.size(1);
        at::Tensor weighted = routedRowsBuffer(M, H, x.options());
        struct Scratch {
            at::Tensor xe, gu, h;
        };
        // One set of buffers per thread for the largest expert: allocating (and page-faulting) fresh
        // buffers for every expert cost as much as the GEMMs. Flat, so that every expert's [c, width]
        // view of them is contiguous whatever its width, as the other path's fresh tensors are.
        auto setup = [&] {
            return Scratch { at::empty({ most * H }, x.options()), at::empty({ most * 2 * widest }, x.options()),
                at::empty({ most * widest }, x.options()) };
        };
        // Largest work (tokens x width) first, so that no thread is left with a big expert at the end
        // while the other waits: ragged widths make the experts' costs differ by far more than their
        // token counts do. Each expert's numbers do not depend on which thread runs it, or when.
        std::vector<int64_t> byWork(static_cast<std::size_t>(E));
        std::iota(byWork.begin(), byWork.end(), int64_t { 0 });
        std::stable_sort(byWork.begin(), byWork.end(),
            [&](int64_t a, int64_t b) { return countPtr[a] * widthOf(a) > countPtr[b] * widthOf(b); });
        parallelTasks(E, setup, [&](int64_t task, Scratch& buf) {
            const int64_t e = byWork[static_cast<std::size_t>(task)];
            const int64_t c = countPtr[e], off = rowBegin[static_cast<std::size_t>(e)], we = widthOf(e);
            if (c == 0)
                return;
            at::Tensor dst = weighted.narrow(0, off, c);
            const at::Tensor gub = gateUpBiasOf(e), db = downBiasOf(e);
            if (we == 0 && db.defined()) {
                // gpt_oss: an expert cut to no units still adds its down bias.
                dst.copy_(db.unsqueeze(0).expand({ c, H }));
                addExpertOutput(options, e, tokenOf.narrow(0, off, c), dst);
                if (options.recordExpertNorms)
                    sortedNorms.narrow(0, off, c).copy_(dst.to(at::kFloat).norm(2, { 1 }));
                dst.mul_(sortedWeights.narrow(0, off, c).unsqueeze(1));
                return;
            }
            if (we == 0) {
                // A zero-width expert adds exactly zero (the rows still go through the index_add_ below;
                // x + 0 == x, so the sums equal the other path's, which skips the expert).
                dst.zero_();
                if (options.recordExpertNorms)
                    sortedNorms.narrow(0, off, c).zero_();
                return;
            }
            // The same operations as the loop below, written into the buffers: index_select,
            // linear (= mm with W^T), silu(gate) * up, linear, * routing weight.
            const at::Tensor gateUp = gateUpOf(e), down = downOf(e);
            at::Tensor xe = buf.xe.narrow(0, 0, c * H).view({ c, H });
            at::Tensor gu = buf.gu.narrow(0, 0, c * 2 * we).view({ c, 2 * we });
            at::Tensor h = buf.h.narrow(0, 0, c * we).view({ c, we });
            at::index_select_out(xe, x, 0, tokenOf.narrow(0, off, c));
            at::mm_out(gu, xe, gateUp.t());
            if (gub.defined())
                gu.add_(gub);
            if (spec.clampedSwiglu) {
                h.copy_(clampedSwiglu(spec, gu, we));
            } else {
                at::silu_out(h, gu.narrow(1, 0, we));
                h.mul_(gu.narrow(1, we, we));
            }
            if (options.unitActivationSum.defined())
                addUnitActivation(options.unitActivationSum, e, h);
            if (options.unitMask.defined())
                h.mul_(options.unitMask[e].to(h.scalar_type()));
            const at::Tensor mix = sortedWeights.narrow(0, off, c).unsqueeze(1);
            if (sameType) {
                at::mm_out(dst, h, down.t());
                if (db.defined())
                    dst.add_(db);
                addExpertOutput(options, e, tokenOf.narrow(0, off, c), dst);
                if (options.recordExpertNorms)
                    sortedNorms.narrow(0, off, c).copy_(dst.to(at::kFloat).norm(2, { 1 }));
                dst.mul_(mix);
            } else {
                const at::Tensor y = db.defined() ? at::mm(h, down.t()) + db : at::mm(h, down.t());
                addExpertOutput(options, e, tokenOf.narrow(0, off, c), y);
                if (options.recordExpertNorms)
                    sortedNorms.narrow(0, off, c).copy_(y.to(at::kFloat).norm(2, { 1 }));
                dst.copy_((y * mix).to(x.scalar_type()));
            }
        });
        // Column blocks are independent sums: the scatter runs on all threads too.
        constexpr int64_t columnsPerTask = 128;
        parallelTasks((H + columnsPerTask - 1) / columnsPerTask, [] { return 0; },
            [&](int64_t b, int) {
                const int64_t c0 = b * columnsPerTask, n = std::min(columnsPerTask, H - c0);
                out.narrow(1, c0, n).index_add_(0, tokenOf, weighted.narrow(1, c0, n));
            });
    } else {
        int64_t offset = 0;
        for (int64_t e = 0; e < E; ++e) {
            const int64_t c = countPtr[e], we = widthOf(e);
            if (c == 0)
                continue;
            const at::Tensor gub = gateUpBiasOf(e), db = downBiasOf(e);
            if (we == 0 && db.defined()) {
                // gpt_oss: an expert cut to no units still adds its down bias.
                at::Tensor idx = tokenOf.narrow(0, offset, c);
                at::Tensor y = db.unsqueeze(0).expand({ c, x.size(1) });
                addExpertOutput(options, e, idx, y);
                if (options.recordExpertNorms)
                    sortedNorms.narrow(0, offset, c).copy_(y.to(at::kFloat).norm(2, { 1 }));
                y = y * sortedWeights.narrow(0, offset, c).unsqueeze(1);
                out.index_add_(0, idx, y.to(x.scalar_type()));
                offset += c;
                continue;
            }
            if (we == 0) {
                if (options.recordExpertNorms)
                    sortedNorms.narrow(0, offset, c).zero_();
                offset += c;
                continue;
            }
            at::Tensor idx = tokenOf.narrow(0, offset, c);
            at::Tensor xe = x.index_select(0, idx);
            // gpt_oss (biases): x @ W + b as transformers writes it, not a fused addmm.
            at::Tensor gu = gub.defined() ? at::matmul(xe, gateUpOf(e).t()) + gub : at::linear(xe, gateUpOf(e));
            at::Tensor h = spec.clampedSwiglu ? clampedSwiglu(spec, gu, we)
                                              : at::silu(gu.narrow(1, 0, we)) * gu.narrow(1, we, we);
            if (options.unitActivationSum.defined())
                addUnitActivation(options.unitActivationSum, e, h);
            if (options.unitMask.defined())
                h = h * options.unitMask[e].to(h.scalar_type());
            at::Tensor y = db.defined() ? at::matmul(h, downOf(e).t()) + db : at::linear(h, downOf(e));
            addExpertOutput(options, e, idx, y);
            if (options.recordExpertNorms)
                sortedNorms.narrow(0, offset, c).copy_(y.to(at::kFloat).norm(2, { 1 }));
            y = y * sortedWeights.narrow(0, offset, c).unsqueeze(1);
            out.index_add_(0, idx, y.to(x.scalar_type()));
            offset += c;
        }
    }
    if (w.sharedExpertGate.defined())
        out = out + at::sigmoid(at::linear(x, w.sharedExpertGate)) * denseMlp(w, x);
    else if (w.mlpGate.weight.defined()) // glm4_moe: shared experts added ungated
        out = out + denseMlp(w, x);

    if (record) {
        record->logits = logits32.to(at::kCPU).contiguous();
        record->topkIds = topIdx.to(at::kCPU, at::kInt).contiguous();
        record->topkWeights = topVal.to(at::kCPU, at::kFloat).contiguous();
        if (options.recordExpertNorms) {
            at::Tensor norms = at::zeros({ N * K }, sortedNorms.options());
            norms.index_copy_(0, sortedSlots, sortedNorms);
            record->expertNorms = norms.view({ N, K }).to(at::kCPU).contiguous();
        }
    }
    return out;
}

} // namespace moeatlas
