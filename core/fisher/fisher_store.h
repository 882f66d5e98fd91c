// Fisher-MoE tables in the atlas (docs/atlas-format.md, "Fisher tables"): per-domain and pooled
// per-unit scores of the routed experts' intermediate units (runtime/fisher.h computes them),
// expert-level sums, sample and token counts, and the concentration statistics (share of the Fisher
// mass held by the top 0.001% ... 1% of units). Public API: no LibTorch, no HDF5 types.
#pragma once

#include "atlas/atlas_file.h"
#include "plan/dim_plan.h"
#include "runtime/fisher.h"
#include "util/progress.h"

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

class Checkpoint;
struct EvalTokens;
struct ModelSpec;

// Forms stored per domain, in storage order; "magnitude" (weights only) has no domain axis.
inline constexpr std::array<const char*, 4> kFisherDomainForms { "mask", "weight", "grad_abs", "activation" };
// The gradient forms (what --forms chooses from).
inline constexpr std::array<const char*, 3> kFisherGradientForms { "mask", "weight", "grad_abs" };
// Top fractions of the concentration statistics: 0.001%, 0.01%, 0.1%, 1% of the units.
inline constexpr std::array<double, 4> kConcentrationFractions { 1e-5, 1e-4, 1e-3, 1e-2 };

// One score form of a Fisher run, [R, L, E, I] with R = domains + 1 (pooled last) for the domain
// forms and R = 1 for magnitude.
struct FisherFormTable {
    std::string form; // mask | weight | grad_abs | activation | magnitude
    std::vector<double> units; // [R, L, E, I]
    std::vector<double> experts; // [R, L, E]: sum over the expert's units (expert-level score)
    std::vector<double> concentration; // [R, L + 1, fractions]: see concentrationShares; row L = all layers
};

// Everything a Fisher run stores under /fisher.
struct FisherTables {
    std::vector<std::string> domains; // the domains of the run, then "pooled"
    std::vector<int> layers; // MoE decoder layers
    int64_t numExperts = 0;
    int64_t intermediate = 0;
    std::vector<int64_t> samples; // [D + 1]
    std::vector<int64_t> tokens; // [D + 1]
    std::vector<int64_t> expertTokens; // [D + 1, L, E]: tokens routed to the expert (top-k hits)
    std::vector<FisherFormTable> forms; // the computed domain forms (kFisherDomainForms order), then magnitude
    std::string paramsJson; // the /fisher params attribute (filled by computeFisherTables)
    double seconds = 0; // the Fisher pass

    const FisherFormTable* find(const std::string& form) const;
    int64_t unitsPerRow() const { return static_cast<int64_t>(layers.size()) * numExperts * intermediate; }
};

// The stored name of a Fisher form: "grad-abs" (the authors' spelling) -> "grad_abs", others as given.
std::string canonicalFisherForm(const std::string& form);

// Chooses the gradient forms of `options` by name (mask, weight, grad_abs or grad-abs). Throws
// InputError naming an unknown form, or when none is given.
void setFisherForms(FisherOptions& options, const std::vector<std::string>& forms);

// Share of the total mass of `scores` held by its largest max(1, ceil(f * n)) values, for every
// fraction f (n = scores.size(); 0 when the total is 0 or there are no scores). Scores must be >= 0.
std::vector<double> concentrationShares(std::span<const double> scores, std::span<const double> fractions);

// [R, L + 1, F] shares of every row of a [R, L, E, I] form: per layer (the layer's E * I units),
// then row L over all units of the row.
std::vector<double> formConcentration(std::span<const double> units, int64_t rows, int64_t layers,
    int64_t unitsPerLayer, std::span<const double> fractions);

// The per-domain tables of a grouped FisherResult (group d = domain d; G == domains.size()) with the
// pooled row appended: sample-weighted mean of the domain rows for the gradient forms (equal to the
// Fisher over all samples), routed-token-weighted for activation (equal to the activation over all
// tokens); expert sums and concentration of every form. paramsJson is left empty.
FisherTables fisherTables(const FisherResult& result, const std::vector<std::string>& domains);

// What computeFisherTables records in params besides the options.
struct FisherRunInfo {
    std::string tokenSource; // EvalTokens::source
    std::string checkpoint; // directory
    std::string configSha256; // of the checkpoint's config.json
};

// Fisher over a token set, one sample group per domain (every domain needs a sequence), as tables
// with params. Progress units: computeFisher's (samples resident, sequence steps streaming); Cancelled propagates.
FisherTables computeFisherTables(const Checkpoint& checkpoint, const ModelSpec& spec, const EvalTokens& tokens,
    const FisherOptions& options, const FisherRunInfo& info, const ProgressFn& progress = {},
    const StopToken* stop = nullptr);

// The /fisher groups of `tables` as written into an atlas opened with AtlasFile::openForUpdate
// (the caller commits): /fisher (replaced whole, so stale forms and ablations go), then one group
// per form and /fisher/concentration.
void writeFisherTables(AtlasFile& update, const FisherTables& tables);

// One form as read back from an atlas (what dimension pruning ranks by).
struct FisherTable {
    std::string form;
    std::vector<std::string> domains; // rows of units: the run's domains, then "pooled"; {"pooled"} for magnitude
    std::vector<int> layers; // MoE decoder layers
    int64_t numExperts = 0;
    int64_t intermediate = 0;
    std::vector<float> units; // [domains.size(), L, E, I]
    std::string params; // JSON: the /fisher params attribute (options, counts, source, checkpoint)

    // Row index of a domain; "" and "pooled" give the pooled row. Throws InputError naming the
    // atlas when the domain is not in the table.
    int row(const std::string& domain) const;
    std::span<const float> rowUnits(int row) const;

    std::filesystem::path atlas; // where it was read from (for messages)
};

// Reads /fisher/<form>/units with /fisher's params; form in kFisherDomainForms or "magnitude"
// ("grad-abs" is accepted for grad_abs). Throws InputError naming the atlas and the dataset when
// the atlas has no Fisher tables, not this form, or a malformed one.
FisherTable readFisherTable(const AtlasFile& atlas, const std::string& form);
FisherTable readFisherTable(const std::filesystem::path& atlas, const std::string& form);

// One row of /fisher/<form>/units as the scores dimension pruning ranks (plan/dim_plan.h), in the
// stored float64 (FisherTable holds float32 copies for display; rounding would merge near-ties):
// the row of `domain`, the pooled row for "" or "pooled", the only row for magnitude. criterion is
// fisher_mask | fisher_weight | fisher_grad_abs | activation | magnitude; domain "" when pooled.
// Throws InputError as readFisherTable does, and naming the atlas for a domain it does not have.
UnitScoreTable readFisherUnitScores(const AtlasFile& atlas, const std::string& form, const std::string& domain);

// The small tables of a Fisher run as read back from an atlas (what the workbench charts): counts
// and, per form, the expert-level sums and the concentration shares; no unit scores (those are
// large: readFisherTable reads one form's on demand).
struct FisherSummaryForm {
    std::string form; // as stored: mask | weight | grad_abs | activation | magnitude
    int64_t rows = 0; // FisherSummary::domains.size(), or 1 for magnitude
    std::vector<double> experts; // [rows, L, E]: /fisher/<form>/experts
    std::vector<double> concentration; // [rows, L + 1, fractions.size()]: /fisher/concentration/<form>
};

struct FisherSummary {
    std::vector<std::string> domains; // the run's domains, then "pooled"
    std::vector<int> layers; // MoE decoder layers
    int64_t numExperts = 0;
    int64_t intermediate = 0;
    std::vector<int64_t> samples; // [domains.size()]
    std::vector<int64_t> tokens; // [domains.size()]
    std::vector<double> fractions; // of the concentration statistics (its params)
    std::vector<FisherSummaryForm> forms; // in the order the params list them
    std::string params; // the /fisher params attribute

    const FisherSummaryForm* find(const std::string& form) const;
};

// Reads /fisher (params, samples, tokens), every form's experts array and /fisher/concentration.
// Empty optional when the atlas has no Fisher tables; InputError naming the atlas and the dataset
// when they are malformed.
std::optional<FisherSummary> readFisherSummary(const AtlasFile& atlas);

} // namespace moeatlas
