#include "export/export_routing.h"

#include "util/error.h"

#include <algorithm>

namespace moeatlas {

namespace {

const char* kindName(RoutingRule::Kind kind)
{
    switch (kind) {
    case RoutingRule::Kind::ProbMoe:
        return "probmoe";
    case RoutingRule::Kind::TopP:
        return "top-p";
    case RoutingRule::Kind::Threshold:
        return "threshold";
    case RoutingRule::Kind::TopK:
        return "top-k";
    case RoutingRule::Kind::Model:
        return "model";
    }
    return "model";
}

bool renormalises(const ModelSpec& spec)
{
    return spec.arch == Architecture::Mixtral || spec.router.normTopkProb;
}

} // namespace

void checkExportRouting(
    const RoutingRule& rule, const ModelSpec& spec, const std::vector<LayerKeep>& keep, const std::string& planName)
{
    if (rule.isModel())
        return;
    const std::string name = rule.name();
    // A rule built in code passes the same checks as one parsed from text (band, K, P, M).
    RoutingRule reparsed = parseRoutingRule(name, spec.router.numExperts, spec.router.topK);
    reparsed.thresholds = rule.thresholds;
    if (!(reparsed == rule))
        throw RequestError("routing", "routing rule '" + name + "': its fields do not read back from its name");
    const std::string what = "routing rule '" + name + "'";
    if (rule.kind == RoutingRule::Kind::Threshold) {
        if (rule.thresholds.empty())
            throw RequestError("routing",
                what
                    + ": a threshold rule needs one calibrated probability threshold per MoE layer; calibrate them "
                      "on an atlas of the checkpoint first (exportRouting, calibrateThresholds)");
        const std::vector<int> moe = spec.moeLayerIndices();
        // As the engine (Executor::evaluate) does: no layer falls back to another k silently.
        for (const int layer : moe)
            if (!rule.thresholds.contains(layer))
                throw RequestError(
                    "routing", what + ": has no calibrated threshold for MoE layer " + std::to_string(layer));
        for (const auto& [layer, t] : rule.thresholds) {
            if (std::find(moe.begin(), moe.end(), layer) == moe.end())
                throw RequestError(
                    "routing", what + ": has a threshold for layer " + std::to_string(layer) + ", not a MoE layer");
            if (!(t >= 0.0 && t <= 1.0))
                throw RequestError("routing",
                    what + ": the threshold of layer " + std::to_string(layer) + " must be a probability in [0, 1]");
        }
    }
    const int maxK = rule.maxK(spec.router.topK);
    for (std::size_t l = 0; l < keep.size(); ++l)
        if (!keep[l].experts.empty() && static_cast<int>(keep[l].experts.size()) < maxK)
            throw RequestError("routing",
                what + " routes up to " + std::to_string(maxK) + " experts per token but " + planName + ", layer "
                    + std::to_string(l) + ", keeps " + std::to_string(keep[l].experts.size())
                    + ": the rule's largest k must be at most the experts of every MoE layer");
}

void writeRoutingConfig(const RoutingRule& rule, const ModelSpec& spec, nlohmann::json& config)
{
    if (rule.isModel())
        return;
    config["num_experts_per_tok"] = rule.maxK(spec.router.topK);
    if (rule.fixed())
        return;
    nlohmann::json r
        = { { "rule", rule.name() }, { "kind", kindName(rule.kind) }, { "k_min", rule.kMin }, { "k_max", rule.kMax } };
    if (rule.kind == RoutingRule::Kind::TopP)
        r["p"] = rule.p;
    if (rule.kind == RoutingRule::Kind::Threshold) {
        r["mean_k"] = rule.meanK;
        nlohmann::json t = nlohmann::json::object();
        for (const auto& [layer, value] : rule.thresholds)
            t[std::to_string(layer)] = value;
        r["thresholds"] = t;
    }
    config["moeatlas_routing"] = r;
}

std::string routingSection(const RoutingRule& rule, const ModelSpec& spec)
{
    const std::string k = std::to_string(spec.router.topK);
    std::string s = "## Routing\n\n";
    if (rule.isModel())
        return s + "Each token is routed to its top " + k + " experts, as in the source model.\n";
    if (rule.fixed())
        return s + "Each token is routed to its top " + std::to_string(rule.k) + " experts (`--routing " + rule.name()
            + "`; the source model routes to " + k
            + "): only `num_experts_per_tok` changed, so stock transformers loads this model.\n";
    std::string how;
    switch (rule.kind) {
    case RoutingRule::Kind::ProbMoe:
        how = "k = the number of the token's positive router logits (ProbMoE's dynamic-k rule)";
        break;
    case RoutingRule::Kind::TopP:
        how = "k = the smallest number of experts whose routing probabilities add up to " + std::to_string(rule.p);
        break;
    default:
        how = "k = the number of experts whose routing probability reaches the layer's threshold "
              "(config `moeatlas_routing.thresholds`, calibrated for a mean k of "
            + std::to_string(rule.meanK) + ")";
        break;
    }
    return s + "Every token gets its own number of experts (`--routing " + rule.name() + "`): " + how + ", clamped to ["
        + std::to_string(rule.kMin) + ", " + std::to_string(rule.kMax) + "]. The router's softmax, its top-"
        + std::to_string(rule.kMax) + " choice and weights are the model's; slots past a token's k get weight 0"
        + (renormalises(spec) ? " and the kept weights are renormalised to sum to 1" : "")
        + ". The rule is in config `moeatlas_routing` and `num_experts_per_tok` is " + std::to_string(rule.kMax)
        + "; load with `AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` (modeling_moeatlas.py).\n";
}

} // namespace moeatlas
