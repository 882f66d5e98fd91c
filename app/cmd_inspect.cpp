// moeatlas inspect <checkpoint>: architecture, layers, experts, memory by component.
#include "commands.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_manifest.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/inventory.h"
#include "checkpoint/tensor_layout.h"
#include "util/error.h"
#include "util/format.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

namespace moeatlas::cli {

namespace {

struct InspectArgs {
    std::string checkpoint;
    bool json = false;
    bool verify = false;
};

std::string layerPattern(const ModelSpec& s)
{
    std::string out;
    for (const LayerSpec& l : s.layers)
        out += l.moe ? 'M' : 'D';
    return out;
}

// --verify: the export's files against the SHA-256 manifest of its model card; every problem is
// listed, and any makes the command fail (exit 1) with the first one as the error.
int runVerify(const InspectArgs& a)
{
    const ManifestCheck check = verifyManifest(a.checkpoint);
    if (a.json) {
        nlohmann::json j;
        j["checkpoint"] = a.checkpoint;
        j["files"] = check.files;
        j["bytes"] = check.bytes;
        j["ok"] = check.ok();
        j["problems"] = check.problems;
        std::printf("%s\n", j.dump(2).c_str());
    }
    if (!check.ok()) {
        for (std::size_t i = 1; i < check.problems.size(); ++i)
            std::fprintf(stderr, "%s\n", check.problems[i].c_str());
        throw InputError(check.problems.front()
            + (check.problems.size() > 1 ? " (and " + std::to_string(check.problems.size() - 1) + " more above)" : ""));
    }
    if (!a.json)
        std::printf("ok: %lld files, %s, match the SHA-256 manifest of %s\n", static_cast<long long>(check.files),
            formatBytes(check.bytes).c_str(), (std::filesystem::path(a.checkpoint) / "README.md").c_str());
    return 0;
}

int runInspect(const InspectArgs& a)
{
    if (a.verify)
        return runVerify(a);
    const Checkpoint ckpt(a.checkpoint);
    const ModelSpec spec = parseModelSpec(ckpt.config(), (ckpt.dir() / "config.json").string());
    TensorLayout(ckpt, spec).validate(ckpt); // the same checks capture makes before it runs
    const Inventory inv = takeInventory(ckpt, spec);
    std::string dtype;
    for (const std::string& n : ckpt.names())
        if (componentOf(n) == Component::RoutedExperts) {
            dtype = std::string(dtypeName(ckpt.info(n).dtype));
            break;
        }

    if (a.json) {
        nlohmann::json j;
        j["checkpoint"] = ckpt.dir().string();
        j["model_type"] = spec.modelType;
        j["num_layers"] = spec.numLayers;
        j["moe_layers"] = spec.moeLayerIndices();
        j["num_experts"] = spec.router.numExperts;
        j["top_k"] = spec.router.topK;
        j["norm_topk_prob"] = spec.router.normTopkProb;
        j["router"] = spec.router.sigmoid() ? "sigmoid" : "softmax";
        if (spec.router.sigmoid())
            j["router_groups"] = { { "n_group", spec.router.numGroups }, { "topk_group", spec.router.topkGroup },
                { "routed_scaling_factor", spec.router.scalingFactor },
                { "e_score_correction_bias", spec.router.correctionBias } };
        j["hidden_size"] = spec.hiddenSize;
        if (spec.mla.enabled()) {
            const MlaSpec& m = spec.mla;
            j["attention"]
                = { { "kind", "mla" }, { "q_lora_rank", m.qLoraRank > 0 ? nlohmann::json(m.qLoraRank) : nullptr },
                      { "kv_lora_rank", m.kvLoraRank }, { "qk_nope_head_dim", m.qkNopeHeadDim },
                      { "qk_rope_head_dim", m.qkRopeHeadDim }, { "v_head_dim", m.vHeadDim },
                      { "rope_interleave", m.ropeInterleave } };
        }
        j["moe_intermediate_size"] = spec.moeIntermediate;
        j["shared_expert_intermediate_size"] = spec.sharedIntermediate;
        j["expert_dtype"] = dtype;
        j["shards"] = ckpt.shardPaths().size();
        for (int c = 0; c < kComponentCount; ++c) {
            const Amount& am = inv.byComponent[static_cast<std::size_t>(c)];
            j["components"][componentName(static_cast<Component>(c))]
                = { { "params", am.params }, { "bytes", am.bytes } };
        }
        j["total"] = { { "params", inv.total.params }, { "bytes", inv.total.bytes } };
        j["active_params_per_token"] = inv.activeParamsPerToken;
        for (double kept : { 0.75, 0.5, 0.25 }) {
            const Amount after = sizeAfterExpertPruning(inv, kept);
            j["expert_pruning"].push_back(
                { { "kept_fraction", kept }, { "params", after.params }, { "bytes", after.bytes } });
        }
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }

    std::printf("checkpoint      %s (%zu shard%s)\n", ckpt.dir().c_str(), ckpt.shardPaths().size(),
        ckpt.shardPaths().size() == 1 ? "" : "s");
    std::printf("architecture    %s\n", spec.modelType.c_str());
    std::printf("layers          %d (%d MoE): %s\n", spec.numLayers, spec.numMoeLayers(), layerPattern(spec).c_str());
    const RouterSpec& r = spec.router;
    const std::string sigmoidRouter = "sigmoid scores, selection bias, top-" + std::to_string(r.topkGroup) + " of "
        + std::to_string(r.numGroups) + " groups, weights " + (r.normTopkProb ? "renormalised" : "not renormalised")
        + " x " + std::to_string(r.scalingFactor);
    std::printf("experts         %d routed per MoE layer, top-%d, %s%s\n", r.numExperts, r.topK,
        r.sigmoid()              ? sigmoidRouter.c_str()
            : r.softmaxAfterTopk ? "softmax over the top-k logits (router bias)"
            : r.normTopkProb     ? "top-k weights renormalised"
                                 : "top-k weights not renormalised",
        spec.sharedIntermediate == 0 ? ""
            : spec.sharedExpertGate  ? ", 1 shared expert (sigmoid gate)"
                                     : ", shared experts (no gate)");
    if (spec.mla.enabled()) {
        const MlaSpec& m = spec.mla;
        std::printf("hidden          %lld, %d heads, expert width %lld\n", static_cast<long long>(spec.hiddenSize),
            spec.numHeads, static_cast<long long>(spec.moeIntermediate));
        const std::string queries = m.qLoraRank > 0 ? "LoRA " + std::to_string(m.qLoraRank) : "q_proj";
        std::printf("attention       multi-head latent: q %s, kv latent %lld, qk %lld + rope %lld%s, v %lld\n",
            queries.c_str(), static_cast<long long>(m.kvLoraRank), static_cast<long long>(m.qkNopeHeadDim),
            static_cast<long long>(m.qkRopeHeadDim), m.ropeInterleave ? " (interleaved)" : "",
            static_cast<long long>(m.vHeadDim));
    } else {
        std::printf("hidden          %lld, heads %d (kv %d) x %lld, expert width %lld\n",
            static_cast<long long>(spec.hiddenSize), spec.numHeads, spec.numKvHeads,
            static_cast<long long>(spec.headDim), static_cast<long long>(spec.moeIntermediate));
    }
    std::printf("expert dtype    %s\n\n", dtype.c_str());
    std::printf("%-16s %12s %12s %7s\n", "component", "params", "bytes", "share");
    for (int c = 0; c < kComponentCount; ++c) {
        const Amount& am = inv.byComponent[static_cast<std::size_t>(c)];
        if (am.params == 0)
            continue;
        std::printf("%-16s %12s %12s %6.1f%%\n", componentName(static_cast<Component>(c)),
            formatCount(am.params).c_str(), formatBytes(am.bytes).c_str(),
            100.0 * static_cast<double>(am.bytes) / static_cast<double>(inv.total.bytes));
    }
    std::printf(
        "%-16s %12s %12s\n", "total", formatCount(inv.total.params).c_str(), formatBytes(inv.total.bytes).c_str());
    std::printf("active/token    %s params\n\n", formatCount(inv.activeParamsPerToken).c_str());
    std::printf("pruning routed experts (same count in every MoE layer):\n");
    for (double kept : { 0.75, 0.5, 0.25 }) {
        const Amount after = sizeAfterExpertPruning(inv, kept);
        std::printf("  keep %3.0f%%  -> %12s, %12s (saves %s)\n", kept * 100.0, formatCount(after.params).c_str(),
            formatBytes(after.bytes).c_str(), formatBytes(inv.total.bytes - after.bytes).c_str());
    }
    return 0;
}

} // namespace

Command addInspectCommand(CLI::App& app)
{
    auto args = std::make_shared<InspectArgs>();
    CLI::App* sub = app.add_subcommand("inspect", "Architecture, experts and memory by component of a checkpoint");
    sub->add_option("checkpoint", args->checkpoint, "Hugging Face checkpoint directory")->required();
    sub->add_flag("--json", args->json, "Print machine-readable JSON");
    sub->add_flag("--verify", args->verify,
        "Check an exported checkpoint's files against the SHA-256 manifest in its README.md (exit 1 on any "
        "difference)");
    return [args] { return runInspect(*args); };
}

} // namespace moeatlas::cli
