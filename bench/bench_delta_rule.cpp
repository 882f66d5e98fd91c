// bench_delta_rule: cost per token of the Gated DeltaNet's chunked delta rule (model/gated_delta.h) at
// several sequence lengths, to show that it scales linearly (a fixed cost per 64-token chunk) where
// softmax attention grows with the length. One layer of Qwen3.5-35B-A3B's shapes by default: 16 q/k heads
// of 128, 32 value heads of 128, one sequence, fp32 inputs (the rule computes in fp32 anyway).
//
//   bench_delta_rule [--threads 2] [--lengths 512,2048,8192] [--key-heads 16] [--value-heads 32]
//                    [--key-dim 128] [--value-dim 128] [--repeats 3]
//
// As the executor does, OpenBLAS is made single-threaded when ATen has several threads (ATen's own
// threads then run the element-wise and batched work). Best of --repeats per length; the machine may be shared. Prints
// one line per length: tokens, seconds, microseconds per token.
#include "model/gated_delta.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using namespace moeatlas;

namespace {

struct Args {
    int threads = 2;
    std::vector<int64_t> lengths { 512, 2048, 8192 };
    int64_t keyHeads = 16, valueHeads = 32, keyDim = 128, valueDim = 128;
    int repeats = 3;
};

Args parseArgs(int argc, char** argv)
{
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        if (i + 1 >= argc || k == "--help" || k == "-h") {
            std::fprintf(stderr,
                "usage: bench_delta_rule [--threads T] [--lengths L1,L2,...] [--key-heads N] [--value-heads N]\n"
                "                        [--key-dim D] [--value-dim D] [--repeats R]\n");
            std::exit(k == "--help" || k == "-h" ? 0 : 2);
        }
        const std::string v = argv[++i];
        if (k == "--threads") {
            a.threads = std::stoi(v);
        } else if (k == "--lengths") {
            a.lengths.clear();
            std::stringstream in(v);
            for (std::string item; std::getline(in, item, ',');)
                a.lengths.push_back(std::stoll(item));
        } else if (k == "--key-heads") {
            a.keyHeads = std::stoll(v);
        } else if (k == "--value-heads") {
            a.valueHeads = std::stoll(v);
        } else if (k == "--key-dim") {
            a.keyDim = std::stoll(v);
        } else if (k == "--value-dim") {
            a.valueDim = std::stoll(v);
        } else if (k == "--repeats") {
            a.repeats = std::stoi(v);
        } else {
            std::fprintf(stderr, "unknown option %s\n", k.c_str());
            std::exit(2);
        }
    }
    return a;
}

void singleThreadedOpenblas(bool enable)
{
    const auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (set && enable)
        set(1);
}

} // namespace

int main(int argc, char** argv)
{
    const Args a = parseArgs(argc, argv);
    at::set_num_threads(a.threads);
    singleThreadedOpenblas(a.threads > 1);
    const c10::InferenceMode inference;
    at::manual_seed(0);
    std::printf("delta rule: %lld q/k heads x %lld, %lld value heads x %lld, %d threads\n",
        static_cast<long long>(a.keyHeads), static_cast<long long>(a.keyDim), static_cast<long long>(a.valueHeads),
        static_cast<long long>(a.valueDim), a.threads);
    std::printf("%8s %10s %12s\n", "tokens", "seconds", "us/token");
    for (const int64_t S : a.lengths) {
        const at::Tensor q = at::randn({ 1, S, a.keyHeads, a.keyDim });
        const at::Tensor k = at::randn({ 1, S, a.keyHeads, a.keyDim });
        const at::Tensor v = at::randn({ 1, S, a.valueHeads, a.valueDim });
        // Log decays of a trained model's size (a few percent per token) and beta in (0, 1).
        const at::Tensor g = -0.05 * at::rand({ 1, S, a.valueHeads });
        const at::Tensor beta = at::sigmoid(at::randn({ 1, S, a.valueHeads }));
        double best = std::numeric_limits<double>::infinity();
        for (int r = 0; r < a.repeats; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            const at::Tensor out = chunkGatedDeltaRule(q, k, v, g, beta);
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!out.isfinite().all().item<bool>()) {
                std::fprintf(stderr, "non-finite output at %lld tokens\n", static_cast<long long>(S));
                return 1;
            }
            best = std::min(best, s);
        }
        std::printf("%8lld %10.3f %12.1f\n", static_cast<long long>(S), best, 1e6 * best / static_cast<double>(S));
        std::fflush(stdout);
    }
    return 0;
}
