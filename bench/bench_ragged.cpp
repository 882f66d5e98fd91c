// bench_ragged: what executing a dimension plan directly saves. One MoE layer with random weights in
// memory (the shape of bench_moe_block's benchmark model), a plan keeping --keep of the routed
// experts' units, and the MoE block timed both ways in the same run, interleaved:
//   masked: MoeOptions::unitMask, a 0/1 mask on the activations at full width (the old evaluation);
//   ragged: MoeOptions::ragged, experts sliced to their kept units (Executor::evaluate now).
// Two plans: uniform widths (IntDim-E: every expert keeps the same number of units) and ragged widths
// (IntDim-L-like: units pooled over the layer, so widths range from 0 to all of them).
//
//   bench_ragged [--threads 2] [--tokens 4096] [--experts 64] [--top-k 8] [--hidden 1024]
//                [--width 512] [--keep 0.5] [--repeats 5] [--seed 0]
//
// As the executor does, OpenBLAS is made single-threaded when ATen has several threads (the blocks
// then split their work across ATen's threads). Best of --repeats for every time; the machine may be
// shared. The outputs of both ways are compared (they differ only by the order of fp32 sums).
#include "checkpoint/model_spec.h"
#include "model/blocks.h"
#include "model/layer_weights.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

using namespace moeatlas;

namespace {

struct Args {
    int threads = 2;
    int64_t tokens = 4096, experts = 64, topK = 8, hidden = 1024, width = 512;
    double keep = 0.5;
    int repeats = 5;
    uint32_t seed = 0;
};

Args parseArgs(int argc, char** argv)
{
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        if (i + 1 >= argc || k == "--help" || k == "-h") {
            std::fprintf(stderr,
                "usage: bench_ragged [--threads T] [--tokens N] [--experts E] [--top-k K] [--hidden H]\n"
                "                    [--width I] [--keep FRACTION] [--repeats R] [--seed S]\n");
            std::exit(k == "--help" || k == "-h" ? 0 : 2);
        }
        const std::string v = argv[++i];
        if (k == "--threads")
            a.threads = std::stoi(v);
        else if (k == "--tokens")
            a.tokens = std::stoll(v);
        else if (k == "--experts")
            a.experts = std::stoll(v);
        else if (k == "--top-k")
            a.topK = std::stoll(v);
        else if (k == "--hidden")
            a.hidden = std::stoll(v);
        else if (k == "--width")
            a.width = std::stoll(v);
        else if (k == "--keep")
            a.keep = std::stod(v);
        else if (k == "--repeats")
            a.repeats = std::stoi(v);
        else if (k == "--seed")
            a.seed = static_cast<uint32_t>(std::stoul(v));
        else {
            std::fprintf(stderr, "bench_ragged: unknown option %s (see --help)\n", k.c_str());
            std::exit(2);
        }
    }
    if (a.keep <= 0 || a.keep > 1 || a.topK > a.experts || a.repeats < 1) {
        std::fprintf(stderr, "bench_ragged: need 0 < --keep <= 1, --top-k <= --experts, --repeats >= 1\n");
        std::exit(2);
    }
    return a;
}

void singleThreadedOpenblas(bool enable)
{
    const auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (set && enable)
        set(1);
}

double seconds(const std::chrono::steady_clock::time_point& t0)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Keeps the `count` highest-scoring of `scores` (E x I, row-major) and returns each expert's kept
// units, sorted. Ties go to the lower index, so a seed names one plan.
std::vector<std::vector<int>> keepHighest(const std::vector<double>& scores, int64_t E, int64_t I, int64_t count)
{
    std::vector<int64_t> order(scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return scores[static_cast<std::size_t>(a)] > scores[static_cast<std::size_t>(b)];
    });
    std::vector<std::vector<int>> units(static_cast<std::size_t>(E));
    for (int64_t i = 0; i < count; ++i)
        units[static_cast<std::size_t>(order[static_cast<std::size_t>(i)] / I)].push_back(
            static_cast<int>(order[static_cast<std::size_t>(i)] % I));
    for (auto& u : units)
        std::sort(u.begin(), u.end());
    return units;
}

// Uniform: the same number of units in every expert. Ragged: one score per unit = an expert's level
// plus noise, pooled over the layer, so some experts keep most units and others none.
std::vector<std::vector<int>> makePlan(bool ragged, const Args& a)
{
    std::mt19937 rng(a.seed + (ragged ? 1u : 0u));
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    const int64_t E = a.experts, I = a.width;
    const auto perExpert = static_cast<int64_t>(static_cast<double>(I) * a.keep + 0.5);
    if (!ragged) {
        std::vector<std::vector<int>> units;
        for (int64_t e = 0; e < E; ++e) {
            std::vector<double> s(static_cast<std::size_t>(I));
            for (double& v : s)
                v = unit(rng);
            units.push_back(keepHighest(s, 1, I, perExpert).front());
        }
        return units;
    }
    std::vector<double> scores(static_cast<std::size_t>(E * I));
    for (int64_t e = 0; e < E; ++e) {
        const double level = unit(rng);
        for (int64_t j = 0; j < I; ++j)
            scores[static_cast<std::size_t>(e * I + j)] = level + 0.5 * unit(rng);
    }
    return keepHighest(scores, E, I, perExpert * E);
}

} // namespace

int main(int argc, char** argv)
{
    const Args a = parseArgs(argc, argv);
    at::set_num_threads(a.threads);
    singleThreadedOpenblas(a.threads > 1);
    const c10::InferenceMode inferenceMode;
    at::manual_seed(a.seed);
    const int64_t N = a.tokens, E = a.experts, K = a.topK, H = a.hidden, I = a.width;

    ModelSpec spec;
    spec.arch = Architecture::Qwen3Moe;
    spec.modelType = "qwen3_moe";
    spec.hiddenSize = H;
    spec.numLayers = 1;
    spec.router = RouterSpec { static_cast<int>(E), static_cast<int>(K), true };
    spec.moeIntermediate = I;
    spec.layers = { LayerSpec {} };
    LayerWeights w;
    w.moe = true;
    w.router = at::randn({ E, H }) * 0.5; // as `moeatlas generate` (router std 0.5)
    w.gateUp = at::randn({ E, 2 * I, H }) * 0.02;
    w.down = at::randn({ E, H, I }) * 0.02;
    const at::Tensor x = at::randn({ N, H });

    std::printf("bench_ragged: %d ATen threads, N=%lld E=%lld K=%lld H=%lld I=%lld, keep %.0f%% of the units, "
                "best of %d\n",
        at::get_num_threads(), static_cast<long long>(N), static_cast<long long>(E), static_cast<long long>(K),
        static_cast<long long>(H), static_cast<long long>(I), 100 * a.keep, a.repeats);
    std::printf("\n| plan | widths min / mean / max | expert FLOPs kept | masked s | ragged s | ragged / masked | "
                "slicing s | max abs diff |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (const bool raggedPlan : { false, true }) {
        const std::vector<std::vector<int>> units = makePlan(raggedPlan, a);
        std::vector<float> mask(static_cast<std::size_t>(E * I), 0.0f);
        for (int64_t e = 0; e < E; ++e)
            for (const int j : units[static_cast<std::size_t>(e)])
                mask[static_cast<std::size_t>(e * I + j)] = 1.0f;
        MoeOptions masked;
        masked.unitMask = at::tensor(at::ArrayRef<float>(mask), at::kFloat).view({ E, I });

        // Sliced on one intra-op thread, as Executor::evaluate does.
        at::set_num_threads(1);
        auto t0 = std::chrono::steady_clock::now();
        const RaggedExperts sliced = sliceExperts(w, units);
        const double slicing = seconds(t0);
        at::set_num_threads(a.threads);
        MoeOptions ragged;
        ragged.ragged = &sliced;

        // Warm-up, then interleaved rounds so that both ways see the same machine state.
        RoutingRecord record;
        const at::Tensor outMasked = moeForward(spec, w, x, masked, &record);
        const at::Tensor outRagged = moeForward(spec, w, x, ragged, &record);
        double bestMasked = std::numeric_limits<double>::infinity(), bestRagged = bestMasked;
        for (int r = 0; r < a.repeats; ++r) {
            t0 = std::chrono::steady_clock::now();
            (void)moeForward(spec, w, x, masked, &record);
            bestMasked = std::min(bestMasked, seconds(t0));
            t0 = std::chrono::steady_clock::now();
            (void)moeForward(spec, w, x, ragged, &record);
            bestRagged = std::min(bestRagged, seconds(t0));
        }
        const double diff = (outMasked - outRagged).abs().max().item<double>();
        // The expert FLOPs the ragged way does, as a share of the masked way's: routed widths / I.
        const at::Tensor widths = at::tensor(at::ArrayRef<int64_t>(sliced.widths), at::kLong);
        const double flopShare
            = widths.index_select(0, record.topkIds.reshape({ -1 }).to(at::kLong)).to(at::kDouble).mean().item<double>()
            / static_cast<double>(I);
        const auto [lo, hi] = std::minmax_element(sliced.widths.begin(), sliced.widths.end());
        const double mean
            = static_cast<double>(std::accumulate(sliced.widths.begin(), sliced.widths.end(), int64_t { 0 }))
            / static_cast<double>(E);
        std::printf("| %s | %lld / %.1f / %lld | %.3f | %.4f | %.4f | %.3f | %.4f | %.2g |\n",
            raggedPlan ? "ragged widths" : "uniform widths", static_cast<long long>(*lo), mean,
            static_cast<long long>(*hi), flopShare, bestMasked, bestRagged, bestRagged / bestMasked, slicing, diff);
        std::fflush(stdout);
    }
    return 0;
}
