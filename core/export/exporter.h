// Writes a pruned Hugging Face checkpoint from a source checkpoint and a plan, byte by byte
// (no LibTorch): kept experts renumbered densely, router rows (and correction biases) sliced,
// kept intermediate units of dimension plans sliced (stock layout for a uniform width, the
// ragged per-expert format otherwise), tokenizer/generation files copied.
#pragma once

#include "checkpoint/routing_rule.h"
#include "plan/plan.h"
#include "util/progress.h"

#include <cstdint>
#include <filesystem>
#include <string>

namespace moeatlas {

struct ExportOptions {
    bool force = false; // replace a non-empty output directory
    uint64_t maxShardBytes = 5ull << 30;
    std::string planPath; // recorded in the model card
    std::string atlasPath; // recorded in the model card when known
    // How the exported model routes (docs/decisions.md, decision 29): model and top-k:K give a stock
    // checkpoint (top-k:K sets num_experts_per_tok); probmoe, top-p and threshold (with its thresholds)
    // add config `moeatlas_routing` and modeling_moeatlas.py (trust_remote_code). See exportRoutingRule.
    RoutingRule routing;
    ProgressFn progress; // per tensor; returning false cancels
};

struct ExportResult {
    // Every layer keeps the same experts count and width: stock transformers loads it unless
    // dynamicRouting; false: needs modeling_moeatlas.py (trust_remote_code).
    bool uniform = true;
    bool dynamicRouting = false; // a rule with a per-token k: needs modeling_moeatlas.py (trust_remote_code)
    bool ragged = false; // per-expert widths (dimension plans other than a uniform IntDim-E)
    int64_t tensors = 0;
    uint64_t tensorBytes = 0; // bytes of tensor data written
    std::filesystem::path dir;
};

// Throws InputError when the plan does not match the checkpoint (expert count, layers, fewer
// experts than top-k, dims for another width or malformed unit lists), when `outDir` is or lies
// inside the source directory, or is non-empty without force; RequestError("routing") when
// options.routing is not a valid rule of the model, routes more experts than a layer keeps, or is a
// threshold rule without thresholds; all before anything is written. Output goes to
// "<outDir>.partial" and is renamed at the end; on any error nothing appears under `outDir`.
ExportResult exportCheckpoint(const std::filesystem::path& sourceDir, const Plan& plan,
    const std::filesystem::path& outDir, const ExportOptions& options = {});

// parseRoutingRule(text) for the model of the checkpoint in `sourceDir` (its expert count and top-k),
// what `moeatlas export --routing` and the export dialog pass as ExportOptions::routing. Throws
// InputError for an unreadable config.json, RequestError("routing") for a bad rule.
RoutingRule exportRoutingRule(const std::filesystem::path& sourceDir, const std::string& text);

// The modeling file written next to a non-uniform or ragged export, or one with a dynamic routing rule
// (loaded with trust_remote_code).
const std::string& nonUniformModelingSource();
// The auto_map class name for a model_type ("MoeAtlasQwen3MoeForCausalLM", ...).
std::string nonUniformClassName(const std::string& modelType);

} // namespace moeatlas
