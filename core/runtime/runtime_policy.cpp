#include "runtime/runtime_policy.h"

#include "runtime/thread_pools.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include <sched.h>

#include <cstdlib>
#include <thread>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace moeatlas {

namespace {

// CPUs this process may run on (its affinity mask: taskset, a container's cpuset), at least one.
int cpusOfThisProcess()
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

} // namespace

int defaultThreads()
{
    if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp && std::atoi(omp) > 0)
        return std::atoi(omp);
    return cpusOfThisProcess();
}

void applyRuntimePolicy(const RuntimePolicy& policy)
{
    at::set_num_threads(policy.threads > 0 ? policy.threads : defaultThreads());
    setBlasThreads(1);
#ifdef __GLIBC__
    if (policy.heapKeepsLargeBlocks) {
        ::mallopt(M_MMAP_THRESHOLD, 256 << 20);
        ::mallopt(M_TRIM_THRESHOLD, 512 << 20);
    }
#endif
}

RuntimeInfo runtimeInfo()
{
    RuntimeInfo info;
    info.blasIsOpenblas = blasIsOpenblas();
    info.blas = blasDescription();
    info.blasThreads = blasThreads();
    info.atenThreads = at::get_num_threads();
    info.openmp = gompParallel() != nullptr;
    return info;
}

std::string describeRuntime(const RuntimeInfo& info)
{
    return "ATen threads " + std::to_string(info.atenThreads) + ", OpenMP " + (info.openmp ? "yes" : "no")
        + "; BLAS: " + info.blas + " (" + std::to_string(info.blasThreads) + " thread"
        + (info.blasThreads == 1 ? "" : "s") + " per call)";
}

ThreadScope::ThreadScope(int atenThreads, int blasThreads)
{
    if (atenThreads > 0) {
        const int previous = at::get_num_threads();
        if (previous != atenThreads) {
            at::set_num_threads(atenThreads);
            m_previousAten = previous;
        }
    }
    if (blasThreads > 0) {
        const int previous = setBlasThreads(blasThreads);
        if (previous > 0 && previous != blasThreads)
            m_previousBlas = previous;
    }
}

ThreadScope::~ThreadScope()
{
    if (m_previousBlas > 0)
        setBlasThreads(m_previousBlas);
    if (m_previousAten > 0)
        at::set_num_threads(m_previousAten);
}

} // namespace moeatlas
