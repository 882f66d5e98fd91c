// The atlas's Fisher-MoE tables (/fisher, core/fisher) as the workbench uses them: names of the
// forms as plan criteria, unit scores for dimension plans, and the chart data, as plain values; no Qt.
#pragma once

#include "fisher/fisher_ablation.h"
#include "fisher/fisher_store.h"
#include "plan/atlas_scores.h"

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace moeatlas::views {

// Heatmap quantity of a form's expert-level sums: "fisher_" + form ("fisher_mask", ...,
// "fisher_activation", "fisher_magnitude").
std::string fisherQuantityName(const std::string& form);
// Criterion of a form in a plan (DimPruning::criterion): fisher_mask, fisher_weight,
// fisher_grad_abs, activation, magnitude.
std::string fisherCriterionName(const std::string& form);
// The gradient forms (mask, weight, grad_abs) are the ones an expert plan can rank by
// (plan/atlas_scores.h fisherExpertForm; readAtlasScores reads them as `moeatlas plan` does).
bool isExpertPlanForm(const std::string& form);

// Concentration chart: share of a row's Fisher mass in its top fraction of units, one curve per
// row (the run's domains, then "pooled"; magnitude: one curve "magnitude").
struct ConcentrationCurve {
    std::string label;
    std::vector<double> fractions; // x: top fraction of units (FisherSummary::fractions)
    std::vector<double> shares; // y: share of the mass, in [0, 1]
};
// layer: index into summary.layers, or -1 for all layers. Empty when the form is absent.
std::vector<ConcentrationCurve> concentrationCurves(const FisherSummary& summary, const std::string& form, int layer);

// Ablation chart: loss on one evaluated domain against the units removed, one curve per ranking
// ("pooled", each domain's own, "random") in stored order; points sorted by n; n = 0 (the full
// model) is not a point but the reference ablationFullLoss().
struct AblationCurve {
    std::string ranking;
    std::vector<double> removed; // x: n
    std::vector<double> nll; // y
};
std::vector<AblationCurve> ablationCurves(const FisherAblationResults& results, int domain);
double ablationFullLoss(const FisherAblationResults& results, int domain); // NaN without the full model

// Unit scores of one expert sorted from the highest (row: index into table.domains; layer: index
// into table.layers).
std::vector<double> unitProfile(const FisherTable& table, int row, int layer, int expert);

// The unit scores of an atlas's forms, read on demand and kept (they can be large: domains + 1
// rows of L x E x I floats per form). Thread-safe: the workbench reads on worker threads.
class FisherUnitStore {
public:
    explicit FisherUnitStore(std::filesystem::path atlas);

    // The form's table, read from the atlas on the first call (blocking; throws InputError).
    std::shared_ptr<const FisherTable> load(const std::string& form);
    // The table when already read, else null (never reads).
    std::shared_ptr<const FisherTable> peek(const std::string& form) const;
    // Installs a table read elsewhere (tests, in-memory snapshots).
    void insert(FisherTable table);
    const std::filesystem::path& atlas() const { return m_atlas; }

private:
    std::filesystem::path m_atlas;
    mutable std::mutex m_mutex;
    std::map<std::string, std::shared_ptr<const FisherTable>> m_tables;
};

} // namespace moeatlas::views
