#include "workflows/eval_workflow.h"

#include "metrics/routing_rule_stats.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/file_lock.h"

namespace moeatlas {

PreparedEval prepareEval(const EvalRequest& request)
{
    const bool haveAtlas = !request.atlas.empty();
    if (!haveAtlas && request.tokens.heldout.domains.empty())
        throw RequestError("tokens",
            "no tokens to evaluate: give held-out domain sets, or an atlas whose "
            "calibration tokens to use");
    if (!haveAtlas && !request.sweep.sparsities.empty() && (request.sweep.specialists || request.sweep.generalist))
        throw RequestError("sweep",
            "a sweep compiles specialist and generalist plans from an atlas's scores: "
            "give an atlas");
    if (request.sweep.sparsities.empty() && request.sweep.randomPlans > 0)
        throw RequestError("sweep.randomPlans", "random plans are drawn per sparsity: give sparsities");
    if (!haveAtlas && request.checkpoint.empty())
        throw RequestError("checkpoint", "no checkpoint: give its directory (or an atlas captured from it)");
    // Outputs that cannot be written are refused before the evaluation, not after it.
    if (!request.csv.empty()) {
        const std::filesystem::path dir = std::filesystem::absolute(request.csv).parent_path();
        if (!std::filesystem::is_directory(dir))
            throw RequestError("csv", request.csv.string() + ": directory " + dir.string() + " does not exist");
    }
    std::optional<AtlasFile> atlas;
    if (haveAtlas)
        atlas = AtlasFile::openReadOnly(request.atlas);
    const bool store = atlas && request.save;
    if (store)
        ensureWritableDirectory(request.atlas);
    AtlasModel model = atlas ? openAtlasModel(*atlas, request.checkpoint) : openModel(request.checkpoint);
    EvalTokens tokens = loadJobTokens(request.tokens, model, atlas ? &*atlas : nullptr);

    std::vector<EvalVariant> variants;
    if (request.full)
        variants.push_back(fullVariant(model.spec));
    for (const std::filesystem::path& file : request.planFiles)
        variants.push_back(variantFromPlanFile(file, model.spec, model.configSha256));
    for (const auto& [name, plan] : request.plans)
        variants.push_back(variantFromPlan(plan, model.spec, name));
    if (!request.sweep.sparsities.empty())
        for (EvalVariant& v : sweepVariants(request.atlas, model.checkpoint, model.spec, request.sweep))
            variants.push_back(std::move(v));
    if (variants.empty())
        throw RequestError("plans", "nothing to evaluate: no full model, plan or sparsity");
    if (!request.routing.empty()) {
        std::vector<RoutingRule> rules;
        for (const std::string& text : request.routing) {
            RoutingRule rule = parseRoutingRule(text, model.spec.router.numExperts, model.spec.router.topK);
            if (model.spec.router.sigmoid() && !rule.fixed())
                throw RequestError("routing",
                    "routing rule '" + text + "' gives each token its own k from softmax probabilities; "
                        + model.spec.modelType
                        + "'s sigmoid router takes 'model' or 'top-k:K' (docs/decisions.md, 56)");
            if (rule.kind == RoutingRule::Kind::Threshold) {
                if (!atlas)
                    throw RequestError("routing",
                        "routing rule '" + text
                            + "': thresholds are calibrated on an atlas's recorded router "
                              "logits: give an atlas");
                calibrateThresholds(*atlas, rule);
            }
            rules.push_back(std::move(rule));
        }
        variants = withRoutingRules(variants, rules, model.spec);
    }
    if (!request.speculative.empty()) {
        std::vector<SpeculativeExecution> speculative;
        for (const std::string& text : request.speculative) {
            speculative.push_back(parseSpeculative(text, model.spec, atlas ? &*atlas : nullptr));
            for (std::size_t i = 0; i + 1 < speculative.size(); ++i)
                if (speculative[i].name() == speculative.back().name())
                    throw RequestError("speculative", "speculative '" + text + "' is given twice");
        }
        variants = withSpeculative(variants, speculative);
    }
    return PreparedEval { store ? std::optional(request.atlas) : std::nullopt, request.csv, request.label,
        std::move(model), std::move(tokens), std::move(variants), request.executor };
}

EvalTable runEval(const PreparedEval& job, const ProgressFn& progress, const StopToken* stop)
{
    EvalTable table = evaluateVariants(
        job.model.checkpoint, job.model.spec, job.executor, job.tokens, job.variants, progress, stop);
    if (!job.csv.empty())
        writeFileAtomically(job.csv, evalTableCsv(table));
    if (job.storeIn)
        storeEvalTable(*job.storeIn, job.label, table, reportingLockWait(progress, stop));
    return table;
}

} // namespace moeatlas
