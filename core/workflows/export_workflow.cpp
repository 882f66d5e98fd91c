#include "workflows/export_workflow.h"

#include "atlas/atlas_file.h"
#include "export/exporter.h"
#include "metrics/routing_rule_stats.h"
#include "util/error.h"
#include "util/sha256.h"

namespace moeatlas {

RoutingRule exportRouting(const std::filesystem::path& checkpoint, const std::string& text,
    const std::filesystem::path& atlas, const ProgressFn& progress, const StopToken* stop)
{
    RoutingRule rule = exportRoutingRule(checkpoint, text);
    if (rule.kind != RoutingRule::Kind::Threshold)
        return rule;
    if (atlas.empty())
        throw RequestError("atlas",
            "routing rule '" + rule.name()
                + "': its per-layer thresholds are calibrated on an atlas of the checkpoint, and none was given");
    const AtlasFile file = AtlasFile::openReadOnly(atlas);
    const std::string sha = sha256File(checkpoint / "config.json");
    if (file.model().configSha256 != sha)
        throw RequestError("atlas",
            atlas.string() + ": the atlas was captured from another config.json (sha256 "
                + file.model().configSha256.substr(0, 12) + "...) than " + (checkpoint / "config.json").string()
                + " (sha256 " + sha.substr(0, 12) + "...): cannot calibrate routing rule '" + rule.name() + "' on it");
    calibrateThresholds(file, rule, progress, stop);
    return rule;
}

} // namespace moeatlas
