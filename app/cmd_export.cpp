// moeatlas export: writes the pruned checkpoint a plan describes, streaming tensors from the
// source checkpoint into a new directory (never into the source).
#include "commands.h"
#include "request_flags.h"

#include "export/exporter.h"
#include "plan/plan.h"
#include "workflows/export_workflow.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <memory>

namespace moeatlas::cli {

namespace {

const FieldFlags kExportFlags { { "routing", "--routing" }, { "atlas", "--atlas" } };

struct ExportArgs {
    std::string checkpoint;
    std::string plan;
    std::string output;
    std::string atlas;
    std::string routing = "model";
    int64_t shardMiB = 5000;
    bool force = false;
};

int runExport(const ExportArgs& a)
{
    const Plan plan = readPlan(a.plan);
    ExportOptions o;
    o.force = a.force;
    o.maxShardBytes = static_cast<uint64_t>(a.shardMiB) << 20;
    o.planPath = a.plan;
    o.atlasPath = a.atlas;
    o.routing = exportRouting(a.checkpoint, a.routing, a.atlas);
    const auto start = std::chrono::steady_clock::now();
    const ExportResult r = exportCheckpoint(a.checkpoint, plan, a.output, o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r.dynamicRouting)
        std::printf("routing %s gives every token its own number of experts: load with trust_remote_code=True "
                    "(modeling_moeatlas.py)\n",
            o.routing.name().c_str());
    else if (o.routing.kind == RoutingRule::Kind::TopK)
        std::printf("routing %s: num_experts_per_tok = %d\n", o.routing.name().c_str(), o.routing.k);
    if (r.ragged)
        std::printf("wrote a RAGGED export (per-expert widths%s): load with trust_remote_code=True "
                    "(modeling_moeatlas.py)\n",
            plan.uniform() ? "" : ", per-layer expert counts");
    else if (r.uniform && r.dynamicRouting)
        std::printf("wrote a UNIFORM export%s with DYNAMIC-K routing: load with trust_remote_code=True\n",
            plan.hasDims() ? " (every kept expert of the same, smaller width)" : "");
    else if (r.uniform)
        std::printf("wrote a UNIFORM export%s: loads in stock transformers (AutoModelForCausalLM)\n",
            plan.hasDims() ? " (every kept expert of the same, smaller width)" : "");
    else
        std::printf("wrote a NON-UNIFORM export (per-layer expert counts): load with trust_remote_code=True "
                    "(modeling_moeatlas.py)\n");
    std::printf("%lld tensors, %.1f MB in %.2f s (%.0f MB/s)\n", static_cast<long long>(r.tensors),
        static_cast<double>(r.tensorBytes) / 1e6, s, s > 0 ? static_cast<double>(r.tensorBytes) / 1e6 / s : 0.0);
    std::printf("%s\n", r.dir.string().c_str());
    return 0;
}

} // namespace

Command addExportCommand(CLI::App& app)
{
    auto a = std::make_shared<ExportArgs>();
    CLI::App* sub = app.add_subcommand("export", "Write the pruned checkpoint a plan describes");
    sub->add_option("checkpoint", a->checkpoint, "Source Hugging Face checkpoint directory")->required();
    sub->add_option("--plan", a->plan, "Plan JSON from `moeatlas plan`")->required();
    sub->add_option("--output,-o", a->output, "Output directory (must be empty or absent)")->required();
    sub->add_option("--atlas", a->atlas,
        "Atlas the scores came from (recorded in the model card; --routing threshold: calibrates on it)");
    sub->add_option("--routing", a->routing,
           "Routing rule of the exported model: model, top-k:K (stock checkpoint), probmoe:KMIN:KMAX or "
           "top-p:P[:KMIN:KMAX] or threshold:M[:KMIN:KMAX] (per-token k, loads with trust_remote_code; threshold "
           "calibrates its per-layer thresholds on --atlas for a mean k of M)")
        ->capture_default_str();
    sub->add_option("--max-shard-mib", a->shardMiB, "Largest shard in MiB")->capture_default_str();
    sub->add_flag("--force", a->force, "Replace a non-empty output directory");
    return [a] { return namingFlags(fieldFlags({ &kForceFlags, &kExportFlags }), [&] { return runExport(*a); }); };
}

} // namespace moeatlas::cli
