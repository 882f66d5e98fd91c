#include "export/exporter.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_writer.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/tensor_layout.h"
#include "util/error.h"
#include "util/sha256.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <sys/mman.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

// Files a loader or a user expects beside the weights; copied verbatim when present.
const char* const kCopiedFiles[]
    = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
          "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json" };

// The keys different architectures use for the routed expert count (METHODS.md section 3).
const char* const kExpertCountKeys[] = { "num_local_experts", "num_experts", "n_routed_experts" };

// One output tensor: the source tensor it comes from and, when sliced, the kept dim-0 rows.
struct OutTensor {
    std::string name;
    std::string source;
    std::optional<std::vector<int>> rows;
    std::vector<int64_t> shape;
    std::size_t shard = 0; // source shard and offset, so reads stay sequential
    uint64_t offset = 0;
};

bool isInside(const fs::path& child, const fs::path& parent)
{
    const fs::path c = fs::weakly_canonical(child), p = fs::weakly_canonical(parent);
    auto ci = c.begin();
    for (auto pi = p.begin(); pi != p.end(); ++pi, ++ci)
        if (ci == c.end() || *ci != *pi)
            return false;
    return true;
}

// Faults the source pages of a tensor in with one call instead of one page fault per 4-64 KiB
// during the copy; measurably faster on a warm page cache (see docs/performance.md). Best effort.
void prefault(std::span<const std::byte> bytes)
{
#ifdef MADV_POPULATE_READ
    static const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto begin = reinterpret_cast<uintptr_t>(bytes.data()) & ~(page - 1);
    const auto end = reinterpret_cast<uintptr_t>(bytes.data() + bytes.size());
    if (end > begin)
        (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);
#else
    (void)bytes;
#endif
}

bool startsWith(const std::string& s, const std::string& prefix)
{
    return s.compare(0, prefix.size(), prefix) == 0;
}

// Checks the plan against the model and returns, per decoder layer, the kept experts (empty
// for dense layers).
std::vector<std::vector<int>> keptPerLayer(const Plan& plan, const ModelSpec& spec, const std::string& source)
{
    if (plan.numExperts != spec.router.numExperts)
        throw InputError("plan is for " + std::to_string(plan.numExperts) + " experts per layer but " + source + " has "
            + std::to_string(spec.router.numExperts));
    const std::vector<int> moe = spec.moeLayerIndices();
    std::vector<int> planned = plan.layers;
    std::sort(planned.begin(), planned.end());
    if (planned != moe)
        throw InputError("plan covers layers that are not exactly the MoE layers of " + source + " ("
            + std::to_string(moe.size()) + " MoE layers, plan has " + std::to_string(planned.size()) + ")");
    std::vector<std::vector<int>> keep(static_cast<std::size_t>(spec.numLayers));
    for (std::size_t i = 0; i < plan.layers.size(); ++i) {
        if (plan.keptIn(i) < spec.router.topK)
            throw InputError("plan keeps " + std::to_string(plan.keptIn(i)) + " experts in layer "
                + std::to_string(plan.layers[i]) + ", fewer than top-k = " + std::to_string(spec.router.topK));
        keep[static_cast<std::size_t>(plan.layers[i])] = plan.keep[i];
    }
    return keep;
}

std::string modelCard(const Plan& plan, const fs::path& source, const ExportOptions& options,
    const std::vector<std::vector<int>>& keep, bool uniform)
{
    std::string counts;
    for (std::size_t l = 0; l < keep.size(); ++l)
        if (!keep[l].empty())
            counts += "| " + std::to_string(l) + " | " + std::to_string(keep[l].size()) + " |\n";
    std::string weights;
    for (const auto& [d, w] : plan.domainWeights)
        weights += (weights.empty() ? "" : ", ") + d + " = " + std::to_string(w);
    std::string card = "---\ntags:\n- moe\n- expert-pruning\n- moeatlas\n---\n\n# Expert-pruned " + plan.modelType
        + " (MoE Atlas)\n\n"
          "This checkpoint keeps a subset of the routed experts of `"
        + source.string()
        + "`, renumbered densely; router rows of dropped experts were removed, so the "
          "router's softmax runs over the kept experts only. Top-k is unchanged.\n\n"
          "## Provenance\n\n"
          "- Source checkpoint: `"
        + source.string()
        + "`\n"
          "- Atlas: `"
        + (!options.atlasPath.empty() ? options.atlasPath
                : !plan.atlas.empty() ? plan.atlas
                                      : std::string("(not recorded)"))
        + "`\n"
          "- Plan: `"
        + (options.planPath.empty() ? std::string("(in memory)") : options.planPath)
        + "`\n"
          "- Method: "
        + plan.method + ", criterion: " + plan.criterion
        + "\n"
          "- Domain weights: "
        + (weights.empty() ? std::string("-") : weights)
        + "\n"
          "- Predicted size: "
        + std::to_string(plan.paramsAfter) + " of " + std::to_string(plan.paramsBefore)
        + " parameters\n\n## Experts kept per layer\n\n| layer | experts |\n|---|---|\n" + counts + "\n";
    card += uniform ? "Every MoE layer keeps the same number of experts: stock transformers loads this model.\n"
                    : "MoE layers keep different numbers of experts (config `num_experts_per_layer`): load with\n"
                      "`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` (modeling_moeatlas.py).\n";
    return card;
}

} // namespace

ExportResult exportCheckpoint(
    const fs::path& sourceDir, const Plan& plan, const fs::path& outDir, const ExportOptions& options)
{
    if (isInside(outDir, sourceDir) || isInside(sourceDir, outDir))
        throw InputError(outDir.string() + ": the output must not be, contain or lie inside the source checkpoint "
            + sourceDir.string());
    const Checkpoint ckpt(sourceDir);
    const std::string configName = (sourceDir / "config.json").string();
    // A plan from an atlas ranks experts of the model the atlas recorded; another config (even
    // one with the same shapes) would prune by someone else's routing statistics.
    if (!plan.configSha256.empty()) {
        const std::string sha = sha256File(sourceDir / "config.json");
        if (sha != plan.configSha256)
            throw InputError(configName + ": config.json (sha256 " + sha.substr(0, 12)
                + "...) is not the one the plan's atlas was captured from (sha256 " + plan.configSha256.substr(0, 12)
                + "..." + (plan.atlas.empty() ? std::string() : ", atlas " + plan.atlas)
                + "): refusing to export a plan for a different checkpoint");
    }
    const ModelSpec spec = parseModelSpec(ckpt.config(), configName);
    const TensorLayout layout(ckpt, spec);
    layout.validate(ckpt);
    const std::vector<std::vector<int>> keep = keptPerLayer(plan, spec, sourceDir.string());

    // Map every source tensor onto its output name (and slice).
    const std::vector<fs::path> shards = ckpt.shardPaths();
    std::vector<OutTensor> out;
    for (const std::string& name : ckpt.names()) {
        const TensorInfo& info = ckpt.info(name);
        OutTensor t { name, name, std::nullopt, info.shape, 0, info.begin };
        const auto shardIt = std::find(shards.begin(), shards.end(), ckpt.fileOf(name).path());
        t.shard = static_cast<std::size_t>(shardIt - shards.begin());
        for (int l : spec.moeLayerIndices()) {
            const std::string moe = layout.moePrefix(l);
            if (!startsWith(name, moe))
                continue;
            const std::vector<int>& k = keep[static_cast<std::size_t>(l)];
            const std::string experts = moe + "experts.";
            const bool perExpert = startsWith(name, experts) && name.size() > experts.size()
                && std::isdigit(static_cast<unsigned char>(name[experts.size()]));
            if (perExpert) {
                const std::size_t dot = name.find('.', experts.size());
                const int e = std::stoi(name.substr(experts.size(), dot - experts.size()));
                const auto it = std::lower_bound(k.begin(), k.end(), e);
                if (it == k.end() || *it != e) {
                    t.name.clear(); // dropped expert
                } else {
                    t.name = experts + std::to_string(it - k.begin()) + name.substr(dot);
                }
            } else if ((startsWith(name, experts) || startsWith(name, moe + "gate.")) && !info.shape.empty()
                && info.shape[0] == spec.router.numExperts) {
                // Fused expert tensors [E, ...], router rows [E, H], correction bias [E].
                t.rows = k;
                t.shape[0] = static_cast<int64_t>(k.size());
            }
            break;
        }
        if (!t.name.empty())
            out.push_back(std::move(t));
    }
    std::sort(out.begin(), out.end(), [](const OutTensor& a, const OutTensor& b) {
        return a.shard != b.shard ? a.shard < b.shard : a.offset < b.offset;
    });

    // config.json: only the expert-count key(s) change (plus the per-layer list when non-uniform).
    const Plan& p = plan;
    bool uniform = p.uniform();
    nlohmann::json config = ckpt.config();
    std::size_t maxKept = 0;
    for (const auto& k : keep)
        maxKept = std::max(maxKept, k.size());
    bool rewritten = false;
    for (const char* key : kExpertCountKeys)
        if (config.contains(key)) {
            config[key] = maxKept;
            rewritten = true;
        }
    if (!rewritten)
        throw InputError(configName + ": no expert-count key (num_local_experts, num_experts, n_routed_experts)");
    std::error_code ec;
    if (!options.force && fs::is_directory(outDir, ec) && !fs::is_empty(outDir, ec))
        throw InputError(outDir.string() + ": output directory is not empty (use --force to replace it)");
    CheckpointWriterOptions wo;
    wo.maxShardBytes = options.maxShardBytes;
    wo.overwrite = options.force;
    CheckpointWriter writer(outDir, wo);
    if (!uniform) {
        const std::string cls = nonUniformClassName(spec.modelType);
        if (cls.empty())
            throw InputError(
                configName + ": non-uniform plans are not supported for model_type '" + spec.modelType + "'");
        std::vector<int> perLayer;
        for (const auto& k : keep)
            perLayer.push_back(static_cast<int>(k.size()));
        config["num_experts_per_layer"] = perLayer;
        config["auto_map"] = { { "AutoModelForCausalLM", "modeling_moeatlas." + cls } };
        writer.addFile("modeling_moeatlas.py", nonUniformModelingSource());
    }
    writer.setConfig(config);
    for (const char* f : kCopiedFiles)
        if (fs::is_regular_file(sourceDir / f))
            writer.copyFile(sourceDir / f, f);
    writer.addFile("README.md", modelCard(plan, sourceDir, options, keep, uniform));

    for (const OutTensor& t : out)
        writer.declare(t.name, ckpt.info(t.source).dtype, t.shape);
    ExportResult result;
    result.uniform = uniform;
    result.dir = outDir;
    int64_t done = 0;
    for (const OutTensor& t : out) {
        const std::span<const std::byte> src = ckpt.bytes(t.source);
        if (!t.rows) {
            prefault(src);
            writer.write(t.name, src);
            result.tensorBytes += src.size();
        } else {
            // Kept rows go from the mapping straight to the file, one chunk per run of
            // consecutive kept rows (keep lists are sorted): no staging copy, few write calls.
            const std::size_t rowBytes = src.size() / static_cast<std::size_t>(ckpt.info(t.source).shape[0]);
            const std::vector<int>& rows = *t.rows;
            for (std::size_t r = 0; r < rows.size();) {
                std::size_t end = r + 1;
                while (end < rows.size() && rows[end] == rows[end - 1] + 1)
                    ++end;
                const std::span<const std::byte> run
                    = src.subspan(static_cast<std::size_t>(rows[r]) * rowBytes, (end - r) * rowBytes);
                prefault(run);
                writer.writeChunk(t.name, run);
                result.tensorBytes += run.size();
                r = end;
            }
        }
        ckpt.release(t.source); // keep resident memory near one tensor on huge checkpoints
        ++done;
        if (options.progress && !options.progress({ "tensor " + t.name, done, static_cast<int64_t>(out.size()) }))
            throw Cancelled();
    }
    writer.finish();
    result.tensors = done;
    return result;
}

} // namespace moeatlas
