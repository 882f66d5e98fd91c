// The two thread pools a CPU run uses, reached from one place (engine-internal): the BLAS's own
// threads (OpenBLAS' pthreads with Debian's LibTorch) and the OpenMP runtime that runs ATen's
// element-wise ops. Both spin-wait after their work: on a small machine they take the cores from each
// other between a GEMM and the ops around it. So a run uses one pool at a time: the executor makes the
// BLAS single-threaded and splits its products across ATen's threads (model/blocks.cpp); the Fisher
// pass, whose autograd ops cannot be split that way, makes ATen single-threaded and lets the BLAS
// thread its GEMMs. Jobs change these counts through ThreadScope (runtime/runtime_policy.h).
//
// The entry points are looked up at run time (dlsym) rather than linked (docs/decisions.md, 26): the
// BLAS is whichever one LibTorch was given (Debian's libblas.so.3 alternative: OpenBLAS, BLIS, the
// reference BLAS ...; no headers to compile against), and the OpenMP calls must reach the runtime
// LibTorch itself loaded (the torch wheel of the cuda preset bundles its own libgomp; building the
// engine with -fopenmp would load a second runtime beside it). This header is the only place in core
// that does so.
#pragma once

#include <dlfcn.h>

#include <string>

namespace moeatlas {

namespace detail {

template <class Fn> Fn runtimeSymbol(const char* name)
{
    return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

inline auto openblasGetThreads()
{
    static const auto get = runtimeSymbol<int (*)()>("openblas_get_num_threads");
    return get;
}

} // namespace detail

// True when the BLAS of this process is OpenBLAS, whose thread count the engine controls.
inline bool blasIsOpenblas()
{
    return detail::openblasGetThreads() != nullptr;
}

// Threads one BLAS call may use: OpenBLAS' setting; 1 for a BLAS without a thread control, which is
// taken to run each call on the calling thread (the reference BLAS always does; BLIS as libblas.so.3
// does at its default BLIS_NUM_THREADS=1; an OpenMP-threaded BLAS does inside an OpenMP region, where
// the thread-split paths call it). docs/decisions.md, 26.
inline int blasThreads()
{
    const auto get = detail::openblasGetThreads();
    return get ? get() : 1;
}

// Sets the BLAS's thread count (threads > 0) and returns the previous one; 0 and no change for a
// BLAS without a thread control.
inline int setBlasThreads(int threads)
{
    static const auto set = detail::runtimeSymbol<void (*)(int)>("openblas_set_num_threads");
    if (!set || !blasIsOpenblas())
        return 0;
    const int previous = blasThreads();
    if (threads > 0 && threads != previous)
        set(threads);
    return previous;
}

// What the BLAS of this process is: OpenBLAS' configuration string (version, core, threading), or
// the file that provides sgemm_ for another BLAS.
inline std::string blasDescription()
{
    static const auto config = detail::runtimeSymbol<const char* (*)()>("openblas_get_config");
    static const auto core = detail::runtimeSymbol<const char* (*)()>("openblas_get_corename");
    if (config)
        return std::string(config()) + (core ? std::string(", core ") + core() : std::string());
    Dl_info info {};
    const void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
    if (sgemm && dladdr(sgemm, &info) != 0 && info.dli_fname)
        return std::string("BLAS without a thread control: ") + info.dli_fname;
    return "no BLAS found (sgemm_)";
}

// omp_set_num_threads of LibTorch's OpenMP runtime: the thread count of parallel regions started from
// the calling thread only (OpenMP keeps it per thread). No-op without an OpenMP runtime.
inline void setOpenmpThreadsOfThisThread(int threads)
{
    static const auto set = detail::runtimeSymbol<void (*)(int)>("omp_set_num_threads");
    if (set)
        set(threads);
}

// GOMP_parallel of LibTorch's OpenMP runtime (what GCC compiles `#pragma omp parallel` to): runs
// fn(data) on `threads` threads of the pool and returns when all have. Null without libgomp.
using GompParallelFn = void (*)(void (*fn)(void*), void* data, unsigned threads, unsigned flags);
inline GompParallelFn gompParallel()
{
    static const auto fn = detail::runtimeSymbol<GompParallelFn>("GOMP_parallel");
    return fn;
}

} // namespace moeatlas
