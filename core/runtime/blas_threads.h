// OpenBLAS' own thread pool, set next to ATen's (engine-internal). OpenBLAS (the BLAS of Debian's
// LibTorch) runs its own pthreads next to ATen's OpenMP threads, and both spin-wait after their work:
// on a small machine the two pools take the cores from each other between a GEMM and the element-wise
// ops around it. So a run uses one pool at a time: the executor makes OpenBLAS single-threaded and
// splits its products across ATen's threads (model/blocks.cpp); the Fisher pass, whose autograd ops
// cannot be split that way, makes ATen single-threaded and lets OpenBLAS thread its GEMMs.
#pragma once

#include <dlfcn.h>

namespace moeatlas {

// Sets OpenBLAS' thread count (threads > 0) and returns the previous one; 0 and no change when OpenBLAS
// is not the BLAS of this process.
inline int setOpenblasThreads(int threads)
{
    static const auto get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    static const auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (!get || !set)
        return 0;
    const int previous = get();
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

} // namespace moeatlas
