// Process-wide run settings have one owner. A program's main applies a RuntimePolicy once (the CLI and
// the workbench; the C++ benchmarks set the thread configurations they compare themselves); library code changes thread
// counts only for the duration of a job, through ThreadScope, and leaves the process as it found it. Public API: no
// LibTorch types.
#pragma once

#include <string>

namespace moeatlas {

struct RuntimePolicy {
    int threads = 0; // ATen intra-op threads; 0 = defaultThreads()
    // glibc's malloc keeps blocks up to 256 MiB in its heap and trims it only above 512 MiB free,
    // instead of its self-adjusting thresholds: autograd's large temporaries (the Fisher pass) are then
    // reused rather than mapped and page-faulted afresh for every sample (over a third of the pass in
    // the kernel otherwise). The streaming code returns each layer's memory explicitly (malloc_trim).
    bool heapKeepsLargeBlocks = true;
};

// OMP_NUM_THREADS when set, otherwise every CPU this process may run on (its affinity mask). Not
// LibTorch's own default, which is one thread on some VMs (Debian's LibTorch 1.13 on a 2-vCPU machine).
int defaultThreads();

// Sets ATen's threads, the BLAS's threads (one: the blocks split their products across ATen's threads,
// runtime/thread_pools.h) and the allocator's thresholds. Call once, from main, before any job.
void applyRuntimePolicy(const RuntimePolicy& policy);

// What the process runs on, for reports (`moeatlas --version`, which packaging/setup.sh logs).
struct RuntimeInfo {
    bool blasIsOpenblas = false; // OpenBLAS, whose threads the engine controls
    std::string blas; // OpenBLAS' configuration, or the file providing the BLAS
    int blasThreads = 1; // threads one BLAS call may use (1 for a BLAS without a thread control)
    int atenThreads = 1; // ATen's intra-op threads
    bool openmp = false; // LibTorch's OpenMP runtime found: the blocks can split work across threads
};
RuntimeInfo runtimeInfo();

// One line: "ATen threads 2, OpenMP yes; BLAS: OpenBLAS 0.3.21 ... (1 thread per call)".
std::string describeRuntime(const RuntimeInfo& info);

// ATen's intra-op threads and the BLAS's threads (each when > 0; otherwise unchanged) for the lifetime
// of the scope, both restored afterwards.
class ThreadScope {
public:
    ThreadScope(int atenThreads, int blasThreads);
    ~ThreadScope();
    ThreadScope(const ThreadScope&) = delete;
    ThreadScope& operator=(const ThreadScope&) = delete;

private:
    int m_previousAten = 0; // 0 = not changed
    int m_previousBlas = 0;
};

} // namespace moeatlas
