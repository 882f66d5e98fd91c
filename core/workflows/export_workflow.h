// The routing rule of an export (`moeatlas export --routing`, the export dialog): the rule read for
// the checkpoint's model and, for threshold:M, its per-layer thresholds calibrated on an atlas of
// that checkpoint (calibrateThresholds, metrics/routing_rule_stats.h). The export itself is
// exportCheckpoint (export/exporter.h), which takes the result as ExportOptions::routing.
#pragma once

#include "checkpoint/routing_rule.h"
#include "util/progress.h"

#include <filesystem>
#include <string>

namespace moeatlas {

// exportRoutingRule(checkpoint, text); a threshold rule is then calibrated on `atlas`'s recorded
// router logits, over all the source's experts as the atlas recorded them (with a plan, the exported
// model's mean k can differ from M: its softmax runs over the kept experts). Throws
// RequestError("routing") for a bad rule, RequestError("atlas") when a threshold rule has no atlas or
// an atlas captured from another config.json (SHA-256), InputError for an unreadable atlas,
// and calibrateThresholds' errors (no recorded router logits).
RoutingRule exportRouting(const std::filesystem::path& checkpoint, const std::string& text,
    const std::filesystem::path& atlas, const ProgressFn& progress = {}, const StopToken* stop = nullptr);

} // namespace moeatlas
