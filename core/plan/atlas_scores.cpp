#include "plan/atlas_scores.h"

#include "atlas/atlas_file.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace moeatlas {

namespace {

// Row `row` of a [rows, L, E] array as a plan-ready table.
ScoreTable rowTable(const std::vector<double>& values, uint64_t row, const std::string& criterion,
    const std::string& domain, const AtlasModelInfo& m, double tokens)
{
    const uint64_t numL = m.moeLayers.size(), numE = static_cast<uint64_t>(m.numExperts);
    ScoreTable t;
    t.criterion = criterion;
    t.domain = domain;
    t.layers = m.moeLayers;
    t.numExperts = m.numExperts;
    t.tokenCount = tokens;
    for (uint64_t l = 0; l < numL; ++l) {
        const auto begin = values.begin() + static_cast<std::ptrdiff_t>((row * numL + l) * numE);
        t.values.emplace_back(begin, begin + static_cast<std::ptrdiff_t>(numE));
    }
    return t;
}

std::string joined(const std::vector<std::string>& names, const char* separator = ", ")
{
    std::string out;
    for (const std::string& n : names)
        out += (out.empty() ? "" : separator) + n;
    return out;
}

// /fisher/<form>/experts [D+1, L, E] of the Fisher run's D domains and its pooled row
// (docs/atlas-format.md, "Fisher tables"); weights: /fisher/tokens.
AtlasScores fisherExpertScores(const AtlasFile& atlas, const std::string& criterion, const std::string& form)
{
    const std::string name = atlas.path().string();
    const std::optional<AtlasResults> top = atlas.readResults("fisher", { "tokens" });
    if (!top)
        throw InputError(name + ": no Fisher tables (/fisher), so no expert-level criterion '" + criterion
            + "'; compute the Fisher importance of this atlas first");
    const AtlasModelInfo& m = atlas.model();
    std::vector<std::string> domains, forms, gradientForms;
    std::vector<int> layers;
    int64_t numExperts = 0;
    std::string configSha256;
    try {
        const nlohmann::json p = nlohmann::json::parse(top->paramsJson);
        domains = p.at("domains").get<std::vector<std::string>>();
        layers = p.at("layers").get<std::vector<int>>();
        numExperts = p.at("num_experts").get<int64_t>();
        forms = p.at("forms").get<std::vector<std::string>>();
        configSha256 = p.value("config_sha256", std::string());
    } catch (const nlohmann::json::exception& e) {
        throw InputError(name + ": /fisher: attribute params is not the expected JSON (" + e.what() + ")");
    }
    if (domains.size() < 2 || domains.back() != "pooled" || layers != m.moeLayers || numExperts != m.numExperts)
        throw InputError(name + ": /fisher: attribute params does not describe this atlas's model (domains "
            + "ending with \"pooled\", its MoE layers and " + std::to_string(m.numExperts) + " experts)");
    // The Fisher job refuses another checkpoint's config; this guards against a hand-edited atlas.
    if (!configSha256.empty() && configSha256 != m.configSha256)
        throw InputError(name + ": /fisher was computed on a checkpoint with another config.json than the one "
            + "the atlas was captured from (attribute params, config_sha256)");
    for (const std::string& f : forms)
        if (!fisherExpertForm("fisher_" + f).empty())
            gradientForms.push_back(f);
    if (std::find(forms.begin(), forms.end(), form) == forms.end()) {
        std::vector<std::string> wanted = gradientForms;
        wanted.push_back(form);
        throw InputError(name + ": the Fisher run did not compute the form '" + form + "' of criterion '" + criterion
            + "' ("
            + (gradientForms.empty() ? std::string("it has no gradient forms") : "it has: " + joined(gradientForms))
            + "); compute the Fisher forms " + joined(wanted) + " first");
    }

    const uint64_t numR = domains.size(), numL = m.moeLayers.size(), numE = static_cast<uint64_t>(m.numExperts);
    const AtlasArray* tokens = top->find("tokens");
    if (!tokens || tokens->dims != std::vector<uint64_t> { numR } || tokens->values.size() != numR)
        throw InputError(name + ": /fisher/tokens is missing or not [" + std::to_string(numR) + "] (domains + 1)");
    const std::optional<AtlasResults> group = atlas.readResults("fisher/" + form, { "experts" });
    const AtlasArray* experts = group ? group->find("experts") : nullptr;
    if (!experts || experts->dims != std::vector<uint64_t> { numR, numL, numE }
        || experts->values.size() != numR * numL * numE)
        throw InputError(name + ": /fisher/" + form
            + "/experts is missing or not [domains + 1, MoE layers, experts] = [" + std::to_string(numR) + ", "
            + std::to_string(numL) + ", " + std::to_string(numE) + "]");

    AtlasScores out;
    for (uint64_t r = 0; r + 1 < numR; ++r)
        out.domains.push_back(rowTable(experts->values, r, criterion, domains[r], m, tokens->values[r]));
    out.pooled = rowTable(experts->values, numR - 1, criterion, "generalist", m, tokens->values[numR - 1]);
    out.source = "/fisher/" + form + "/experts";
    out.atlasPath = name;
    out.configSha256 = m.configSha256;
    out.checkpointPath = m.checkpointPath;
    return out;
}

} // namespace

std::string fisherExpertForm(const std::string& criterion)
{
    for (const char* form : { "mask", "weight", "grad_abs" })
        if (criterion == std::string("fisher_") + form)
            return form;
    return {};
}

AtlasScores readAtlasScores(const std::filesystem::path& path, const std::string& criterion)
{
    return readAtlasScores(AtlasFile::openReadOnly(path), criterion);
}

AtlasScores readAtlasScores(const AtlasFile& atlas, const std::string& criterion)
{
    const std::string name = atlas.path().string();
    if (!atlas.isComplete())
        throw InputError(name + ": the atlas is incomplete (resume the interrupted capture, then score the atlas)");
    if (const std::string form = fisherExpertForm(criterion); !form.empty())
        return fisherExpertScores(atlas, criterion, form);
    const std::optional<AtlasResults> results = atlas.readResults("scores/" + criterion);
    if (!results) {
        if ((criterion == "reap" || criterion == "ean") && !atlas.options().storeExpertNorms)
            throw InputError(name + ": criterion '" + criterion
                + "' needs expert output norms, and this atlas was captured without them "
                  "(capture again recording expert output norms, then score the atlas)");
        if (criterion == "fisher_activation" || criterion == "fisher_magnitude" || criterion == "activation"
            || criterion == "magnitude")
            throw InputError(name + ": criterion '" + criterion
                + "' ranks units, not experts (an expert's mean activation is blind to how often it is routed; "
                  "magnitude has no domain axis): rank units by it with a dimension budget and the unit criterion "
                  "activation or magnitude, and experts by fisher_mask, fisher_weight or fisher_grad_abs");
        std::vector<std::string> have = atlas.resultGroups("scores");
        for (const std::string& form : atlas.resultGroups("fisher"))
            if (!fisherExpertForm("fisher_" + form).empty())
                have.push_back("fisher_" + form);
        throw InputError(name + ": no scores for criterion '" + criterion + "' ("
            + (have.empty() ? std::string("the atlas has no scores") : "the atlas has: " + joined(have))
            + "); score the atlas first");
    }
    return atlasScoresFromResults(atlas, criterion, *results);
}

AtlasScores atlasScoresFromResults(const AtlasFile& atlas, const std::string& criterion, const AtlasResults& results)
{
    const std::string name = atlas.path().string();
    const AtlasModelInfo& m = atlas.model();
    const auto& domains = atlas.calibration().domains;
    const AtlasArray* value = results.find("value");
    const uint64_t numD = domains.size(), numL = m.moeLayers.size(), numE = static_cast<uint64_t>(m.numExperts);
    if (!value || value->dims != std::vector<uint64_t> { numD + 1, numL, numE }
        || value->values.size() != (numD + 1) * numL * numE)
        throw InputError(name + ": /scores/" + criterion
            + "/value is missing or not [domains + 1, MoE layers, experts] = [" + std::to_string(numD + 1) + ", "
            + std::to_string(numL) + ", " + std::to_string(numE) + "]");

    AtlasScores out;
    double total = 0;
    for (uint64_t d = 0; d < numD; ++d) {
        out.domains.push_back(
            rowTable(value->values, d, criterion, domains[d].name, m, static_cast<double>(domains[d].numTokens)));
        total += static_cast<double>(domains[d].numTokens);
    }
    out.pooled = rowTable(value->values, numD, criterion, "generalist", m, total);
    out.source = "/scores/" + criterion;
    out.atlasPath = name;
    out.configSha256 = m.configSha256;
    out.checkpointPath = m.checkpointPath;
    return out;
}

} // namespace moeatlas
