// The two thread pools a CPU run uses, set from one place (engine-internal): OpenBLAS' own pthreads
// (the BLAS of Debian's LibTorch) and the OpenMP runtime that runs ATen's element-wise ops. Both
// spin-wait after their work: on a small machine they take the cores from each other between a GEMM
// and the ops around it. So a run uses one pool at a time: the executor makes OpenBLAS
// single-threaded and splits its products across ATen's threads (model/blocks.cpp); the Fisher pass,
// whose autograd ops cannot be split that way, makes ATen single-threaded and lets OpenBLAS thread
// its GEMMs.
//
// Their entry points are looked up at run time (dlsym) rather than linked (docs/decisions.md, 26):
// OpenBLAS is whichever BLAS LibTorch was given (Debian's alternatives; no headers, and another BLAS
// simply has no such symbols), and the OpenMP calls must reach the runtime LibTorch itself loaded (the
// torch wheel of the cuda preset bundles its own libgomp; building the engine with -fopenmp would load
// a second runtime beside it). This header is the only place in core that does so.
#pragma once

#include <dlfcn.h>

namespace moeatlas {

namespace detail {

template <class Fn> Fn runtimeSymbol(const char* name)
{
    return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

} // namespace detail

// OpenBLAS' thread count, or 0 when OpenBLAS is not the BLAS of this process.
inline int openblasThreads()
{
    static const auto get = detail::runtimeSymbol<int (*)()>("openblas_get_num_threads");
    return get ? get() : 0;
}

// Sets OpenBLAS' thread count (threads > 0) and returns the previous one; 0 and no change when OpenBLAS
// is not the BLAS of this process.
inline int setOpenblasThreads(int threads)
{
    static const auto set = detail::runtimeSymbol<void (*)(int)>("openblas_set_num_threads");
    const int previous = openblasThreads();
    if (!set || previous == 0)
        return 0;
    if (threads > 0 && threads != previous)
        set(threads);
    return previous;
}

// OpenBLAS at `threads` for the lifetime of the guard (threads <= 0: unchanged), restored afterwards.
class OpenblasThreads {
public:
    explicit OpenblasThreads(int threads)
        : m_previous(threads > 0 ? setOpenblasThreads(threads) : 0)
    {
    }
    ~OpenblasThreads()
    {
        if (m_previous > 0)
            setOpenblasThreads(m_previous);
    }
    OpenblasThreads(const OpenblasThreads&) = delete;
    OpenblasThreads& operator=(const OpenblasThreads&) = delete;

private:
    int m_previous;
};

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
