// Shared fixtures of the workbench-shell suites: a small scored and evaluated atlas built with the
// CLI as a user would, and an in-memory snapshot at DeepSeek-V3 scale for the benchmarks.
#pragma once

#include "atlas_document.h"

#include <QString>
#include <QStringList>

#include <memory>

namespace moeatlas::test {

// Builds <dir>/model (qwen3_moe, 3 MoE layers x 8 experts, top-2), two calibration domains
// (math, code), captures, scores and evaluates (--sparsity 0.25,0.5 --random-plans 2) into
// <dir>/run.atlas.h5. Returns its path, or an empty string with the failing command in *error.
QString buildViewsAtlas(const QString& dir, QString* error);

// Runs `moeatlas fisher ATLAS --ablate <ablate>` on it plus `extra` arguments (all forms and
// baselines by default). False with the failing command in *error.
bool addFisherTables(const QString& atlas, QString* error, const QString& ablate = QStringLiteral("0,10,100"),
    const QStringList& extra = {});

// A snapshot with `layers` MoE layers x `experts` experts, two domains, criteria peu and
// soft_mass (soft_mass rows sum to 1 per layer), load statistics and byte costs; deterministic.
std::shared_ptr<views::AtlasSnapshot> syntheticSnapshot(int layers, int experts, int topK);

} // namespace moeatlas::test
