// Writes a pruned Hugging Face checkpoint from a source checkpoint and a plan, byte by byte
// (no LibTorch): kept experts renumbered densely, router rows (and correction biases) sliced,
// kept intermediate units of dimension plans sliced (stock layout for a uniform width, the
// ragged per-expert format otherwise), tokenizer/generation files copied.
#pragma once

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
    ProgressFn progress; // per tensor; returning false cancels
};

struct ExportResult {
    bool uniform = true; // stock transformers loads it; false: needs modeling_moeatlas.py (trust_remote_code)
    bool ragged = false; // per-expert widths (dimension plans other than a uniform IntDim-E)
    int64_t tensors = 0;
    uint64_t tensorBytes = 0; // bytes of tensor data written
    std::filesystem::path dir;
};

// Throws InputError when the plan does not match the checkpoint (expert count, layers, fewer
// experts than top-k, dims for another width or malformed unit lists), when `outDir` is or lies
// inside the source directory, or is non-empty without force; all before anything is written. Output goes to
// "<outDir>.partial" and is renamed at the end; on any error nothing appears under `outDir`.
ExportResult exportCheckpoint(const std::filesystem::path& sourceDir, const Plan& plan,
    const std::filesystem::path& outDir, const ExportOptions& options = {});

// The modeling file written next to a non-uniform or ragged export (loaded with trust_remote_code).
const std::string& nonUniformModelingSource();
// The auto_map class name for a model_type ("MoeAtlasQwen3MoeForCausalLM", ...).
std::string nonUniformClassName(const std::string& modelType);

} // namespace moeatlas
