// The Fisher-MoE ablation: remove the n most important routed-expert units (by the pooled Fisher
// score, and by each domain's own) and measure the per-domain loss, against removing n random
// units. Every variant is a unit mask (ExpertMask::units) evaluated by core/eval in one weight stream.
#pragma once

#include "eval/eval.h"
#include "fisher/fisher_store.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

struct FisherAblationOptions {
    std::vector<int64_t> counts { 0, 10, 100, 1000 }; // units removed; above the model's units -> all units
    std::string form = "mask"; // score the units are ranked by (a form of the tables)
    bool perDomain = true; // also remove each domain's own top-n
    bool random = true; // and n uniformly random units (seeded)
    uint64_t seed = 0;
};

// One evaluated variant: which units it removes.
struct AblationVariant {
    std::string ranking; // "full" (nothing removed), "pooled", a domain name, or "random"
    int64_t removed = 0; // n
    // Removed units as flat indices into one [L, E, I] row (unit j of expert e in layers[l] at
    // (l E + e) I + j), in removal order: descending score (ties: lower index first), or ascending
    // for random.
    std::vector<int64_t> units;
};

struct FisherAblation {
    std::string form;
    uint64_t seed = 0;
    std::vector<int> layers; // of the tables: decodes AblationVariant::units
    int64_t numExperts = 0;
    int64_t intermediate = 0;
    std::vector<AblationVariant> variants; // parallel to table.variants; the full model first
    EvalTable table;
};

// Indices of the n largest scores (descending; ties: lower index first).
std::vector<int64_t> topUnits(std::span<const double> scores, int64_t n);
// n distinct indices in [0, total), uniform (Floyd's sampling with splitmix64), ascending.
std::vector<int64_t> randomUnits(int64_t total, int64_t n, uint64_t seed);
// The unit mask that removes `units` (flat [L, E, I] indices): every layer with a removed unit lists
// all E experts with their kept units; other layers are absent (kept whole).
ExpertMask removalMask(const std::string& name, std::span<const int> layers, int64_t numExperts, int64_t intermediate,
    std::span<const int64_t> units);

// Refuses domain names the ablation reserves for its variants ("full", "random": a domain's ranking is
// named after the domain), naming `source`; call it before the Fisher pass so no work is thrown away.
void checkAblationDomains(const std::vector<std::string>& domains, const std::string& source);

// A list of unit counts as users write it: "0,10,100" -> {0, 10, 100}; "none" -> no ablation.
// Throws InputError quoting the text and the item that is not an integer >= 0.
std::optional<std::vector<int64_t>> parseAblationCounts(const std::string& text);

// The form the ablation ranks units by: mask when computed, else the first gradient form computed.
std::string ablationRankingForm(const FisherOptions& options);

// The counts sorted, duplicates dropped, clipped to `totalUnits`, 0 first (always present).
// Throws InputError for a negative count.
std::vector<int64_t> ablationCounts(std::vector<int64_t> counts, int64_t totalUnits);

// The variants (full model, then per n > 0: top-n pooled, top-n of every domain, random-n) and what
// they remove. Names: "full", "top-<n>:<pooled|domain>", "random-<n>". Throws InputError when the
// ranking form is not in the tables.
std::vector<AblationVariant> ablationVariants(const FisherTables& tables, const FisherAblationOptions& options);

// Evaluates the variants on `tokens` (core/eval's evaluateVariants: one weight stream for all).
// Progress units: tokens x layers x variants; Cancelled propagates.
FisherAblation runFisherAblation(const Checkpoint& checkpoint, const ModelSpec& spec, const ExecutorOptions& executor,
    const EvalTokens& tokens, const FisherTables& tables, const FisherAblationOptions& options,
    const ProgressFn& progress = {}, const StopToken* stop = nullptr);

// Writes /fisher/ablation into an atlas opened with openForUpdate (after writeFisherTables, which
// replaces /fisher whole); docs/atlas-format.md has the layout.
void writeFisherAblation(AtlasFile& update, const FisherAblation& ablation);

// /fisher/ablation as read back from an atlas (what the workbench charts).
struct FisherAblationRow {
    std::string name; // "full", "top-<n>:<pooled|domain>", "random-<n>"
    std::string ranking; // "full", "pooled", a domain name or "random"
    int64_t removed = 0; // n
    std::vector<double> nll; // per evaluated domain, nats per predicted token
};

struct FisherAblationResults {
    std::string form; // score the units were ranked by
    uint64_t seed = 0;
    std::vector<std::string> domains; // evaluated domains
    std::vector<int64_t> tokens; // predicted tokens per domain
    std::vector<FisherAblationRow> variants; // stored order: the full model first
    std::string tokenSource;

    int fullIndex() const; // -1 when the full model is missing
};

// Empty optional when the atlas has no /fisher/ablation; InputError naming the atlas and the
// dataset when it is malformed.
std::optional<FisherAblationResults> readFisherAblation(const AtlasFile& atlas);

} // namespace moeatlas
