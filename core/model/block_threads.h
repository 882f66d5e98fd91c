// Private to core/model: how the blocks split their matrix products across ATen's threads
// (blocks.cpp, moe_block.cpp). Include only from .cpp files that already include ATen.
#pragma once

#include "model/layer_weights.h"
#include "runtime/thread_pools.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/grad_mode.h>

#include <atomic>
#include <cstdint>
#include <exception>

namespace moeatlas::detail {

// --- Splitting the work across ATen's threads ----------------------------------------------------
//
// With several ATen (OpenMP) threads and a single-threaded BLAS -- what the executor sets up:
// OpenBLAS' own pthreads spin after every GEMM and, on a small machine, take the cores that ATen's
// OpenMP workers need between GEMMs; a BLAS without a thread control (reference BLAS, BLIS as
// libblas.so.3) runs each call on one thread anyway -- the blocks split their matrix products themselves: experts,
// sequences or heads, and row blocks of the projections are tasks that ATen's threads pull one at a
// time. Each task runs the same single-threaded GEMM and element-wise ops on its subset. Experts,
// sequences and heads are GEMMs of the other path's shapes, so their outputs are the same numbers; a row
// block of a projection is a GEMM of fewer rows, which the BLAS may block, and so sum, differently from
// the whole (OpenBLAS does under some of its CPU-specific kernels, e.g. Haswell/Zen), so there the two paths
// agree up to the order of fp32 sums: bit for bit only where the kernel sums a row the same way
// whatever the row count (measured so on one AVX-512 machine, docs/performance.md).

// at::parallel_for is a template whose OpenMP code is only compiled in with -fopenmp; without it (the
// engine is built without: runtime/thread_pools.h says why), it runs inline on the calling thread. Then
// the OpenMP runtime LibTorch itself uses is called directly (gompParallel), and omp_in_parallel()
// inside it keeps ATen's own ops serial, as in an at::parallel_for body.
inline bool canRunOnThreads()
{
#ifdef _OPENMP
    return true;
#else
    return gompParallel() != nullptr;
#endif
}

// True when the blocks split their products across ATen's threads (see above). Never while autograd
// records (gradient passes): the split paths use out= and in-place ops on shared buffers.
inline bool splitWork(const at::Tensor& x)
{
    return x.device().is_cpu() && at::get_num_threads() > 1 && !at::in_parallel_region() && blasThreads() == 1
        && canRunOnThreads() && !at::GradMode::is_enabled();
}

// Calls worker() once on each of ATen's intra-op threads, concurrently, with the caller's LibTorch
// thread-local state (inference mode, grad mode); an exception thrown by one is rethrown here once
// all have returned.
template <class F> void onEachThread(const F& worker)
{
    struct Context {
        const F* worker = nullptr;
        at::ThreadLocalState state;
        std::atomic_flag failed = ATOMIC_FLAG_INIT;
        std::exception_ptr error;
    } ctx;
    ctx.worker = &worker;
    auto body = [](void* p) {
        auto& c = *static_cast<Context*>(p);
        try {
            const at::ThreadLocalStateGuard guard(c.state);
            (*c.worker)();
        } catch (...) {
            if (!c.failed.test_and_set())
                c.error = std::current_exception();
        }
    };
#ifdef _OPENMP
    const int64_t threads = at::get_num_threads();
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t)
            body(&ctx);
    });
#else
    gompParallel()(body, &ctx, static_cast<unsigned>(at::get_num_threads()), 0);
#endif
    if (ctx.error)
        std::rethrow_exception(ctx.error);
}

// Calls task(i) for every i in [0, count) on ATen's threads, each thread taking the next index as it
// becomes free (a thread the machine's other work slows down simply takes fewer). setup() runs once
// per thread before its first task and returns what that thread's tasks share (scratch buffers).
template <class Setup, class Task> void parallelTasks(int64_t count, const Setup& setup, const Task& task)
{
    std::atomic<int64_t> next { 0 };
    onEachThread([&] {
        int64_t i = next.fetch_add(1);
        if (i >= count)
            return;
        auto local = setup();
        for (; i < count; i = next.fetch_add(1))
            task(i, local);
    });
}

// x W^T + b, its rows split into blocks across ATen's threads when splitWork(x) (blocks.cpp).
at::Tensor linear(const at::Tensor& x, const Linear& l);

} // namespace moeatlas::detail
