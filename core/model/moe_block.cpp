// The MoE block: the router (softmax or the DeepSeek-style sigmoid with groups), the routing rules, the
// routed experts (split across ATen's threads) and the shared expert. Split from blocks.cpp.
#include "model/blocks.h"

#include "model/block_threads.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace moeatlas {

using detail::linear;
using detail::parallelTasks;
using detail::splitWork;

namespace {

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
            if (we == 0 && !db.defined()) {
                if (options.recordExpertNorms)
                    sortedNorms.narrow(0, offset, c).zero_();
                offset += c;
                continue;
            }
            at::Tensor idx = tokenOf.narrow(0, offset, c);
            at::Tensor y;
            if (we == 0) {
                // gpt_oss: an expert cut to no units still adds its down bias.
                y = db.unsqueeze(0).expand({ c, x.size(1) });
            } else {
                at::Tensor xe = x.index_select(0, idx);
                // gpt_oss (biases): x @ W + b as transformers writes it, not a fused addmm.
                at::Tensor gu = gub.defined() ? at::matmul(xe, gateUpOf(e).t()) + gub : at::linear(xe, gateUpOf(e));
                at::Tensor h = spec.clampedSwiglu ? clampedSwiglu(spec, gu, we)
                                                  : at::silu(gu.narrow(1, 0, we)) * gu.narrow(1, we, we);
                if (options.unitActivationSum.defined())
                    addUnitActivation(options.unitActivationSum, e, h);
                if (options.unitMask.defined())
                    h = h * options.unitMask[e].to(h.scalar_type());
                y = db.defined() ? at::matmul(h, downOf(e).t()) + db : at::linear(h, downOf(e));
            }
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
