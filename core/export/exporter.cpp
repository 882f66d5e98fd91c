#include "export/exporter.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/tensor_layout.h"
#include "export/export_routing.h"
#include "export/export_tensors.h"
#include "plan/dim_plan.h"
#include "util/error.h"
#include "util/sha256.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

// Files a loader or a user expects beside the weights; copied verbatim when present.
const char* const kCopiedFiles[]
    = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
          "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json" };

// The keys different architectures use for the routed expert count (METHODS.md section 3).
const char* const kExpertCountKeys[] = { "num_local_experts", "num_experts", "n_routed_experts" };

bool isInside(const fs::path& child, const fs::path& parent)
{
    const fs::path c = fs::weakly_canonical(child), p = fs::weakly_canonical(parent);
    auto ci = c.begin();
    for (auto pi = p.begin(); pi != p.end(); ++pi, ++ci)
        if (ci == c.end() || *ci != *pi)
            return false;
    return true;
}

// The config key of the routed experts' width (METHODS.md section 3).
const char* expertWidthKey(Architecture arch)
{
    return arch == Architecture::Mixtral || arch == Architecture::Olmoe || arch == Architecture::GptOss
        ? "intermediate_size"
        : "moe_intermediate_size";
}

// Checks the plan (and its dims) against the model and returns, per decoder layer, what it
// keeps (nothing for dense layers). `planName` names the plan in errors.
// A routing rule other than the model's is checked afterwards (checkExportRouting): it may route
// fewer experts than the model's top-k.
std::vector<LayerKeep> keptPerLayer(
    const Plan& plan, const ModelSpec& spec, const std::string& source, const std::string& planName, bool modelRouting)
{
    if (plan.numExperts != spec.router.numExperts)
        throw InputError(planName + " is for " + std::to_string(plan.numExperts) + " experts per layer but " + source
            + " has " + std::to_string(spec.router.numExperts));
    const std::vector<int> moe = spec.moeLayerIndices();
    std::vector<int> planned = plan.layers;
    std::sort(planned.begin(), planned.end());
    if (planned != moe || plan.keep.size() != plan.layers.size())
        throw InputError(planName + " covers layers that are not exactly the MoE layers of " + source + " ("
            + std::to_string(moe.size()) + " MoE layers, plan has " + std::to_string(planned.size()) + ")");
    checkDims(plan, planName);
    if (plan.hasDims() && plan.dims.intermediate != spec.moeIntermediate)
        throw InputError(planName + ": dims are for routed experts of " + std::to_string(plan.dims.intermediate)
            + " units but " + source + " has " + std::to_string(spec.moeIntermediate));
    std::vector<LayerKeep> keep(static_cast<std::size_t>(spec.numLayers));
    for (std::size_t i = 0; i < plan.layers.size(); ++i) {
        const std::string layer = planName + ", layer " + std::to_string(plan.layers[i]);
        const std::vector<int>& k = plan.keep[i];
        if (modelRouting && plan.keptIn(i) < spec.router.topK)
            throw InputError(layer + ": keeps " + std::to_string(plan.keptIn(i))
                + " experts, fewer than top-k = " + std::to_string(spec.router.topK));
        for (std::size_t j = 0; j < k.size(); ++j)
            if (k[j] < 0 || k[j] >= spec.router.numExperts || (j > 0 && k[j] <= k[j - 1]))
                throw InputError(layer + ": kept experts must be sorted, distinct ids in [0, "
                    + std::to_string(spec.router.numExperts) + ")");
        LayerKeep& lk = keep[static_cast<std::size_t>(plan.layers[i])];
        lk.experts = k;
        if (plan.hasDims())
            lk.units = plan.units[i];
    }
    return keep;
}

// A group-limited sigmoid router (glm4_moe with n_group > 1) splits its experts into n_group consecutive groups
// and scores a group by its two largest scores: the exported router keeps n_group, so every group must keep the
// same number of experts (at least 2), as llm-compressor does for DeepSeek. Dimension plans would change
// moe_intermediate_size, from which transformers derives the shared experts' width: refused.
void checkGroupBalance(
    const ModelSpec& spec, const std::vector<LayerKeep>& keep, bool dims, const std::string& planName)
{
    const RouterSpec& r = spec.router;
    if (!r.sigmoid())
        return;
    if (dims)
        throw InputError(planName + ": dimension (width) exports are not supported for " + spec.modelType
            + ": transformers derives the shared experts' width from moe_intermediate_size (times n_shared_experts)");
    if (r.numGroups <= 1)
        return;
    const int size = r.groupSize();
    for (std::size_t l = 0; l < keep.size(); ++l) {
        if (keep[l].experts.empty())
            continue;
        std::vector<int> perGroup(static_cast<std::size_t>(r.numGroups), 0);
        for (const int e : keep[l].experts)
            ++perGroup[static_cast<std::size_t>(e / size)];
        std::string counts;
        for (const int c : perGroup)
            counts += (counts.empty() ? "" : ", ") + std::to_string(c);
        const int first = perGroup.front();
        const bool balanced = std::all_of(perGroup.begin(), perGroup.end(), [&](int c) { return c == first; });
        if (!balanced || first < 2)
            throw InputError(planName + ", layer " + std::to_string(l) + ": keeps " + counts + " experts in its "
                + std::to_string(r.numGroups)
                + " router groups (n_group); a group-limited router needs the same "
                  "number in every group, at least 2 (a group's score is the sum of its top 2)");
        if (first * r.topkGroup < r.topK)
            throw InputError(planName + ", layer " + std::to_string(l) + ": keeps " + std::to_string(first)
                + " experts per group; topk_group (" + std::to_string(r.topkGroup) + ") groups then hold fewer than "
                + "top-k = " + std::to_string(r.topK));
    }
}

// Stock layout with a smaller width key when every kept expert of every layer keeps the same
// (non-zero) number of units and every layer the same number of experts; ragged otherwise.
ExportKind exportKindOf(const Plan& plan, const std::vector<LayerKeep>& keep)
{
    if (!plan.hasDims())
        return ExportKind::Experts;
    if (!plan.uniform())
        return ExportKind::Ragged;
    std::optional<std::size_t> width;
    for (const LayerKeep& l : keep)
        for (const auto& u : l.units) {
            if (width && *width != u.size())
                return ExportKind::Ragged;
            width = u.size();
        }
    return width && *width > 0 ? ExportKind::StockDims : ExportKind::Ragged;
}

std::string dimsSection(const Plan& plan, const std::vector<LayerKeep>& keep, ExportKind kind)
{
    const DimPruning& d = plan.dims;
    std::string s = "## Expert widths (dimension pruning)\n\n"
                    "Every kept routed expert keeps only some of its "
        + std::to_string(d.intermediate)
        + " intermediate units (rows of gate/up, columns of down, in their original order); shared experts and "
          "dense MLPs are untouched.\n\n- Scope: "
        + d.scope + ", criterion: " + d.criterion + ", domain: " + (d.domain.empty() ? "pooled" : d.domain)
        + ", sparsity: " + std::to_string(d.sparsity)
        + "\n\n| layer | experts | min width | mean width | max width | zero-width |\n|---|---|---|---|---|---|\n";
    for (std::size_t l = 0; l < keep.size(); ++l) {
        if (keep[l].experts.empty())
            continue;
        std::size_t lo = SIZE_MAX, hi = 0, sum = 0, zero = 0;
        for (const auto& u : keep[l].units) {
            lo = std::min(lo, u.size());
            hi = std::max(hi, u.size());
            sum += u.size();
            zero += u.empty();
        }
        char mean[32];
        std::snprintf(mean, sizeof mean, "%.1f", static_cast<double>(sum) / static_cast<double>(keep[l].units.size()));
        s += "| " + std::to_string(l) + " | " + std::to_string(keep[l].units.size()) + " | " + std::to_string(lo)
            + " | " + mean + " | " + std::to_string(hi) + " | " + std::to_string(zero) + " |\n";
    }
    s += kind == ExportKind::StockDims
        ? "\nEvery kept expert has the same width (the config's expert-width key): stock transformers loads this "
          "model.\n"
        : "\nExperts have their own widths (config `moeatlas_expert_widths`, one list per decoder layer, null for a "
          "dense "
          "layer; an expert of width 0 contributes nothing but keeps its router row). Each expert is stored as "
          "`model.layers.<l>.mlp.experts.<k>.{gate,up,down}_proj.weight`; load with\n"
          "`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` (modeling_moeatlas.py).\n";
    return s;
}

std::string modelCard(const Plan& plan, const fs::path& source, const ExportOptions& options,
    const std::vector<LayerKeep>& keep, ExportKind kind, bool uniform, const std::string& routing)
{
    std::string counts;
    for (std::size_t l = 0; l < keep.size(); ++l)
        if (!keep[l].experts.empty())
            counts += "| " + std::to_string(l) + " | " + std::to_string(keep[l].experts.size()) + " |\n";
    std::string weights;
    for (const auto& [d, w] : plan.domainWeights)
        weights += (weights.empty() ? "" : ", ") + d + " = " + std::to_string(w);
    std::string card = "---\ntags:\n- moe\n- expert-pruning\n- moeatlas\n---\n\n# Expert-pruned " + plan.modelType
        + " (MoE Atlas)\n\n"
          "This checkpoint keeps a subset of the routed experts of `"
        + source.string()
        + "`, renumbered densely; router rows of dropped experts were removed, so the "
          "router's softmax runs over the kept experts only.\n\n"
          "## Provenance\n\n"
          "- Source checkpoint: `"
        + source.string()
        + "`\n"
          "- Atlas: `"
        + (!options.atlasPath.empty() ? options.atlasPath
                : !plan.atlas.empty() ? plan.atlas
                                      : std::string("(not recorded)"))
        + "`\n"
          "- Plan: `"
        + (options.planPath.empty() ? std::string("(in memory)") : options.planPath)
        + "`\n"
          "- Method: "
        + plan.method + ", criterion: " + plan.criterion
        + "\n"
          "- Domain weights: "
        + (weights.empty() ? std::string("-") : weights)
        + "\n"
          "- Predicted size: "
        + std::to_string(plan.paramsAfter) + " of " + std::to_string(plan.paramsBefore)
        + " parameters\n\n## Experts kept per layer\n\n| layer | experts |\n|---|---|\n" + counts + "\n";
    if (kind != ExportKind::Experts)
        return card + dimsSection(plan, keep, kind) + "\n" + routing;
    card += uniform ? "Every MoE layer keeps the same number of experts: stock transformers loads this model.\n"
                    : "MoE layers keep different numbers of experts (config `num_experts_per_layer`): load with\n"
                      "`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` (modeling_moeatlas.py).\n";
    return card + "\n" + routing;
}

} // namespace

RoutingRule exportRoutingRule(const fs::path& sourceDir, const std::string& text)
{
    const Checkpoint ckpt(sourceDir);
    const ModelSpec spec = parseModelSpec(ckpt.config(), (sourceDir / "config.json").string());
    RoutingRule rule = parseRoutingRule(text, spec.router.numExperts, spec.router.topK);
    if (spec.router.sigmoid() && !rule.fixed())
        throw RequestError("routing",
            "routing rule '" + text + "' gives each token its own k from softmax probabilities; " + spec.modelType
                + "'s sigmoid router takes 'model' or 'top-k:K' (docs/decisions.md, 56)");
    return rule;
}

ExportResult exportCheckpoint(
    const fs::path& sourceDir, const Plan& plan, const fs::path& outDir, const ExportOptions& options)
{
    if (isInside(outDir, sourceDir) || isInside(sourceDir, outDir))
        throw InputError(outDir.string() + ": the output must not be, contain or lie inside the source checkpoint "
            + sourceDir.string());
    const Checkpoint ckpt(sourceDir);
    const std::string configName = (sourceDir / "config.json").string();
    // A plan from an atlas ranks experts of the model the atlas recorded; another config (even
    // one with the same shapes) would prune by someone else's routing statistics.
    if (!plan.configSha256.empty()) {
        const std::string sha = sha256File(sourceDir / "config.json");
        if (sha != plan.configSha256)
            throw InputError(configName + ": config.json (sha256 " + sha.substr(0, 12)
                + "...) is not the one the plan's atlas was captured from (sha256 " + plan.configSha256.substr(0, 12)
                + "..." + (plan.atlas.empty() ? std::string() : ", atlas " + plan.atlas)
                + "): refusing to export a plan for a different checkpoint");
    }
    const ModelSpec spec = parseModelSpec(ckpt.config(), configName);
    const TensorLayout layout(ckpt, spec);
    layout.validate(ckpt);
    const std::string planName = options.planPath.empty() ? std::string("plan") : options.planPath;
    const std::vector<LayerKeep> keep
        = keptPerLayer(plan, spec, sourceDir.string(), planName, options.routing.isModel());
    checkExportRouting(options.routing, spec, keep, planName);
    checkGroupBalance(spec, keep, plan.hasDims(), planName);
    const bool dynamicRouting = !options.routing.fixed();
    const ExportKind kind = exportKindOf(plan, keep);
    const std::vector<OutTensor> out = mapTensors(ckpt, spec, layout, keep, kind);

    // config.json: only the expert-count key(s) change, the width key for a stock dims export,
    // plus the per-layer lists when the model is not stock any more.
    const bool uniform = kind == ExportKind::StockDims || (kind == ExportKind::Experts && plan.uniform());
    nlohmann::json config = ckpt.config();
    // A multimodal Qwen3.5-MoE config keeps the language model's keys in text_config.
    nlohmann::json& textConfig
        = spec.tensorPrefix != "model." && config.contains("text_config") ? config["text_config"] : config;
    std::size_t maxKept = 0;
    for (const auto& k : keep)
        maxKept = std::max(maxKept, k.experts.size());
    bool rewritten = false;
    for (const char* key : kExpertCountKeys)
        if (textConfig.contains(key)) {
            textConfig[key] = maxKept;
            rewritten = true;
        }
    if (!rewritten)
        throw InputError(configName + ": no expert-count key (num_local_experts, num_experts, n_routed_experts)");
    // MTP layers (decoder layers past num_hidden_layers, which transformers never runs) are not exported
    // (mapTensors drops their tensors): the exported config says there are none (docs/decisions.md).
    if (textConfig.contains("num_nextn_predict_layers"))
        textConfig["num_nextn_predict_layers"] = 0;
    if (kind == ExportKind::StockDims) {
        const char* key = expertWidthKey(spec.arch);
        if (!textConfig.contains(key))
            throw InputError(configName + ": no expert-width key '" + key + "'");
        textConfig[key] = plan.units.front().front().size();
    }
    writeRoutingConfig(options.routing, spec, textConfig);
    std::string modeling;
    if (!uniform || dynamicRouting) {
        const std::string cls = nonUniformClassName(spec.modelType);
        if (cls.empty() && uniform)
            throw RequestError("routing",
                configName + ": dynamic routing rules (" + options.routing.name()
                    + ") are not supported for model_type '" + spec.modelType + "'");
        if (cls.empty())
            throw InputError(configName + ": "
                + (kind == ExportKind::Ragged ? "ragged (per-expert width)" : "non-uniform")
                + " exports are not supported for model_type '" + spec.modelType + "'");
        if (!plan.uniform()) {
            std::vector<int> perLayer;
            perLayer.reserve(keep.size());
            for (const auto& k : keep)
                perLayer.push_back(static_cast<int>(k.experts.size()));
            config["num_experts_per_layer"] = perLayer;
        }
        if (kind == ExportKind::Ragged) {
            nlohmann::json widths = nlohmann::json::array();
            for (const LayerKeep& k : keep) {
                if (k.experts.empty()) {
                    widths.push_back(nullptr);
                    continue;
                }
                std::vector<int> w;
                w.reserve(k.units.size());
                for (const auto& u : k.units)
                    w.push_back(static_cast<int>(u.size()));
                widths.push_back(w);
            }
            config["moeatlas_expert_widths"] = widths;
        }
        config["auto_map"] = { { "AutoModelForCausalLM", "modeling_moeatlas." + cls } };
        modeling = nonUniformModelingSource();
    }

    std::error_code ec;
    if (!options.force && fs::is_directory(outDir, ec) && !fs::is_empty(outDir, ec))
        throw RequestError("force", outDir.string() + ": output directory is not empty and is not replaced");
    CheckpointWriterOptions wo;
    wo.maxShardBytes = options.maxShardBytes;
    wo.overwrite = options.force;
    CheckpointWriter writer(outDir, wo);
    if (!modeling.empty())
        writer.addFile("modeling_moeatlas.py", modeling);
    writer.setConfig(config);
    for (const char* f : kCopiedFiles)
        if (fs::is_regular_file(sourceDir / f))
            writer.copyFile(sourceDir / f, f);
    writer.setCard(
        "README.md", modelCard(plan, sourceDir, options, keep, kind, uniform, routingSection(options.routing, spec)));

    for (const OutTensor& t : out)
        writer.declare(t.name, ckpt.info(t.source).dtype, t.shape);
    ExportResult result;
    result.uniform = uniform;
    result.ragged = kind == ExportKind::Ragged;
    result.dynamicRouting = dynamicRouting;
    result.dir = outDir;
    int64_t done = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
        const OutTensor& t = out[i];
        result.tensorBytes += writeTensor(writer, ckpt, t);
        // Keep resident memory near one tensor on huge checkpoints (a fused source feeds several outputs).
        if (i + 1 == out.size() || out[i + 1].source != t.source)
            ckpt.release(t.source);
        ++done;
        if (options.progress && !options.progress({ "tensor " + t.name, done, static_cast<int64_t>(out.size()) }))
            throw Cancelled();
    }
    writer.finish();
    result.tensors = done;
    return result;
}

} // namespace moeatlas
