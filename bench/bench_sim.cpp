// Offload simulator throughput on a Qwen3-30B-A3B-shaped trace (48 MoE layers, 128 experts, top-8, bf16):
// 65,536 tokens in 128 sequences of 512, synthetic skewed routing and predictions that are right with
// probability 0.8 per slot. Prints the wall time of each policy/eviction and its simulated TPOT on the
// a6000-pcie4 preset. Usage: bench_sim [tokens]. The numbers are the simulator's speed, not a claim about
// any predictor (synthetic routing). See docs/performance.md.
#include "checkpoint/hf_config.h"
#include "sim/hardware.h"
#include "sim/simulator.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

using namespace moeatlas;

int main(int argc, char** argv)
{
    const int64_t tokens = argc > 1 ? std::atoll(argv[1]) : 65536;
    const nlohmann::json config = nlohmann::json::parse(R"({
        "model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
        "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
        "num_experts_per_tok": 8, "moe_intermediate_size": 768, "intermediate_size": 6144,
        "torch_dtype": "bfloat16", "rope_theta": 1000000.0, "max_position_embeddings": 40960
    })");
    const ModelSpec spec = parseModelSpec(config, "qwen3-30b-a3b/config.json");
    const HardwareSpec hw = loadHardware("a6000-pcie4", "hardware");
    ComputeModel compute;
    compute.costs = modelCosts(spec, DType::BF16);
    compute.flopsPerSecond = flopsFor(hw, DType::BF16, "dtype");
    compute.memoryBandwidth = hw.memoryBandwidth;

    const int layers = 48, experts = 128, k = 8;
    RoutingTrace trace;
    trace.numExperts = experts;
    trace.topK = k;
    for (int64_t s = 0; s <= tokens / 512; ++s)
        trace.seqOffsets.push_back(std::min(tokens, s * 512));
    if (trace.seqOffsets.back() != tokens)
        trace.seqOffsets.push_back(tokens);
    trace.domainIds.assign(static_cast<std::size_t>(tokens), 0);
    std::mt19937_64 rng(1);
    std::vector<double> cdf(experts);
    double sum = 0;
    for (int e = 0; e < experts; ++e)
        cdf[e] = sum += 1.0 / std::pow(e + 1.0, 0.8);
    std::uniform_real_distribution<double> u(0, sum);
    std::bernoulli_distribution right(0.8);
    std::vector<PredictionSet> preds;
    for (int l = 0; l < layers; ++l) {
        trace.moeLayers.push_back(l);
        std::vector<int> perm(experts);
        for (int e = 0; e < experts; ++e)
            perm[e] = e;
        std::shuffle(perm.begin(), perm.end(), rng);
        std::vector<int32_t> ids;
        ids.reserve(static_cast<std::size_t>(tokens * k));
        for (int64_t t = 0; t < tokens; ++t) {
            int32_t row[8];
            for (int j = 0; j < k; ++j) {
                int32_t e;
                do
                    e = perm[std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin()];
                while (std::find(row, row + j, e) != row + j);
                row[j] = e;
            }
            ids.insert(ids.end(), row, row + k);
        }
        trace.routed.push_back(std::move(ids));
    }
    for (int l = 0; l + 1 < layers; ++l) {
        PredictionSet p;
        p.source = l;
        p.lookahead = 1;
        p.budget = k;
        p.ids = trace.routed[l + 1];
        for (int64_t t = 0; t < tokens; ++t)
            for (int j = 0; j < k; ++j)
                if (!right(rng)) { // a wrong guess: some expert not in the row
                    int32_t* row = p.ids.data() + t * k;
                    int32_t e;
                    do
                        e = static_cast<int32_t>(rng() % experts);
                    while (std::find(row, row + k, e) != row + k);
                    row[j] = e;
                }
        preds.push_back(std::move(p));
    }

    std::printf("%lld tokens x %d layers x top-%d, cache 32 slots/layer, %s\n", static_cast<long long>(tokens), layers,
        k, hw.name.c_str());
    for (const SimPolicy policy : { SimPolicy::OnDemand, SimPolicy::Prefetch, SimPolicy::Speculative })
        for (const Eviction eviction : { Eviction::Lru, Eviction::Lfu, Eviction::Belady }) {
            SimConfig c;
            c.policy = policy;
            c.eviction = eviction;
            c.cache.slots = 32;
            c.linkBandwidth = hw.linkBandwidth;
            c.linkLatency = hw.linkLatency;
            const auto t0 = std::chrono::steady_clock::now();
            const SimResult r = simulate(trace, preds, compute, c);
            const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::printf("%-12s %-7s wall %6.2f s  TPOT %7.2f ms (compute %5.2f, stall %6.2f)  misses %lld\n",
                simPolicyName(policy).c_str(), evictionName(eviction).c_str(), wall, r.tpotMean * 1e3,
                r.computePerToken * 1e3, r.stallPerToken * 1e3, static_cast<long long>(r.total.misses));
        }
    return 0;
}
