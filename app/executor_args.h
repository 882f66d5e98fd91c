// The execution options shared by `capture` and `eval` (--device, --dtype, --batch-tokens, --threads,
// --resident, --memory-budget-mib): one registration and one translation into ExecutorOptions, so both
// commands run the model the same way. kExecutorFlags (request_flags.h) names them in errors.
#pragma once

#include "runtime/executor.h"

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace moeatlas::cli {

struct ExecutorArgs {
    std::string device = "cpu";
    std::string dtype = "float32";
    int64_t batchTokens = 8192;
    int threads = 0;
    bool resident = false;
    uint64_t memoryBudgetMiB = 0;
};

inline void addExecutorOptions(CLI::App* sub, ExecutorArgs& a)
{
    sub->add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
    sub->add_option("--dtype", a.dtype, "Compute dtype: float32, bfloat16, float16")->capture_default_str();
    sub->add_option("--batch-tokens", a.batchTokens, "Tokens per micro-batch")->capture_default_str();
    sub->add_option("--threads", a.threads, "Intra-op threads (0 = OMP_NUM_THREADS, or every CPU the process may use)");
    sub->add_flag("--resident", a.resident, "Keep all layers in memory (small models)");
    sub->add_option("--memory-budget-mib", a.memoryBudgetMiB,
        "Memory budget of the plan, checked before any work (0 = MemAvailable)");
}

// The options' fields of ExecutorOptions; the others keep their values in `o`.
inline void applyExecutorArgs(const ExecutorArgs& a, ExecutorOptions& o)
{
    o.device = a.device;
    o.computeDtype = a.dtype;
    o.batchTokens = a.batchTokens;
    o.threads = a.threads;
    o.keepWeightsResident = a.resident;
    o.memoryBudgetBytes = a.memoryBudgetMiB << 20;
}

} // namespace moeatlas::cli
