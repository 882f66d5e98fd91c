// Speculative execution in evaluation (docs/methods.md, "Speculative execution, evaluated"): the option parsed
// and filled from an atlas, and the variants it adds.
#include "eval/eval.h"

#include "checkpoint/model_spec.h"
#include "prefetch/prefetch_atlas.h"
#include "prefetch/prefetch_derived.h"
#include "util/error.h"

#include <algorithm>
#include <charconv>

namespace moeatlas {

namespace {

std::string recordedList(const AtlasPrefetchInfo& info)
{
    std::string names;
    for (const std::string& p : info.predictors)
        names += (names.empty() ? "" : ", ") + p;
    return names.empty() ? std::string("none") : names;
}

} // namespace

SpeculativeExecution parseSpeculative(const std::string& text, const ModelSpec& spec, const AtlasFile* atlas)
{
    const std::string field = "speculative";
    const std::string what = "speculative '" + text + "'";
    // Speculative execution swaps the experts and re-weights them with the softmax of their logits; a
    // sigmoid router's bias and groups have no such swap yet (issue 15), so it is refused rather than wrong.
    if (spec.router.sigmoid())
        throw RequestError(field,
            what + ": " + spec.modelType
                + "'s sigmoid router (bias and group-limited selection) is not supported by speculative "
                  "execution; it runs on softmax routers");
    const std::size_t colon = text.find(':');
    SpeculativeExecution s;
    try {
        s.predictor = parsePredictor(text.substr(0, colon), field);
    } catch (const RequestError& e) {
        throw RequestError(field, what + ": " + e.what());
    }
    if (colon != std::string::npos) {
        const std::string digits = text.substr(colon + 1);
        const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), s.lookahead);
        if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size())
            throw RequestError(field, what + ": '" + digits + "' is not a lookahead (a count of MoE layers, e.g. 2)");
    }
    const std::vector<int> moeLayers = spec.moeLayerIndices();
    const int L = static_cast<int>(moeLayers.size());
    if (s.lookahead < 1 || s.lookahead >= L)
        throw RequestError(field,
            what + ": lookahead " + std::to_string(s.lookahead) + " is "
                + (s.lookahead < 1 ? "not a positive count of MoE layers"
                                   : "beyond the last MoE layer (the model has " + std::to_string(L)
                            + " MoE layers: a lookahead from 1 to " + std::to_string(L - 1)
                            + " leaves a layer to speculate)"));
    const Predictor p = s.predictor;
    if (p == Predictor::NextRouter || p == Predictor::Previous || p == Predictor::Oracle)
        return s;
    if (!atlas)
        throw RequestError(field,
            what + ": '" + predictorName(p) + "' comes from an atlas ("
                + (p == Predictor::Frequency ? "its routing" : "its /prefetch, capture --prefetch")
                + "): give --atlas");
    if (p == Predictor::Frequency) {
        // The hit-rate tables' frequency baseline: the atlas's routing over its training split.
        const RoutingTrace trace = readRoutingTrace(*atlas);
        for (int m = s.lookahead; m < L; ++m)
            s.frequencyOrder[moeLayers[static_cast<std::size_t>(m)]] = frequencyOrder(trace, m);
        return s;
    }
    const std::string name = predictorName(p);
    const std::optional<AtlasPrefetchInfo> info = atlas->prefetchInfo();
    if (!info || std::find(info->predictors.begin(), info->predictors.end(), name) == info->predictors.end())
        throw RequestError(field,
            what + ": " + atlas->path().string() + " (--atlas) did not record '" + name + "' ("
                + (info ? "/prefetch has: " + recordedList(*info) : std::string("no /prefetch"))
                + "); capture with --prefetch " + name
                + ", or speculate with next-router, previous, frequency or "
                  "oracle");
    if (s.lookahead > info->maxLookahead)
        throw RequestError(field,
            what + ": " + atlas->path().string() + " (--atlas) recorded '" + name + "' up to lookahead "
                + std::to_string(info->maxLookahead));
    for (int m = 0; m + s.lookahead < L; ++m) {
        const int layer = moeLayers[static_cast<std::size_t>(m)];
        const std::string where = atlas->path().string() + " (--atlas): /prefetch/";
        if (p == Predictor::QuasiHidden) {
            auto [values, counts] = atlas->readDefaultVectors(layer);
            if (values.size()
                != static_cast<std::size_t>(spec.router.numExperts) * static_cast<std::size_t>(spec.hiddenSize))
                throw RequestError(field,
                    what + ": " + where + "default_vectors/" + std::to_string(layer) + " is missing or not ["
                        + std::to_string(spec.router.numExperts) + ", " + std::to_string(spec.hiddenSize) + "]");
            s.defaultVectors[layer] = std::move(values);
        } else {
            std::optional<AtlasLearnedEstimator> e = atlas->readLearnedEstimator(name, layer, s.lookahead);
            if (!e)
                throw RequestError(field,
                    what + ": " + where + "learned/" + name + "/" + std::to_string(layer) + "/d"
                        + std::to_string(s.lookahead) + " is missing");
            s.estimators[layer] = std::move(*e);
        }
    }
    return s;
}

std::vector<EvalVariant> withSpeculative(
    const std::vector<EvalVariant>& variants, const std::vector<SpeculativeExecution>& speculative)
{
    std::vector<EvalVariant> out = variants;
    for (const EvalVariant& v : variants) {
        if (!v.mask.routing.isModel() || v.mask.speculative)
            continue;
        for (const SpeculativeExecution& s : speculative) {
            EvalVariant spec = v;
            spec.name = v.name + "+spec:" + s.name();
            spec.mask.name = spec.name;
            spec.mask.speculative = s;
            spec.speculative = s.name();
            spec.base = v.name;
            out.push_back(std::move(spec));
        }
    }
    return out;
}

} // namespace moeatlas
