// Small atlases with chosen routing records, for the core/metrics suites.
#pragma once

#include "atlas/atlas_file.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace moeatlas::test {

struct TinyAtlasSpec {
    int numExperts = 4;
    int topK = 2;
    std::vector<int> moeLayers { 0 };
    std::vector<std::string> domainNames { "a" };
    std::vector<int16_t> domainIds; // [T]
    std::vector<int32_t> tokenIds; // [T]; empty: t % 1000
    std::vector<int64_t> seqOffsets; // empty: one sequence per token
    // Per MoE layer, row-major: logits [T, E]; ids, weights, norms [T, k] (norms may be empty).
    std::vector<std::vector<float>> logits;
    std::vector<std::vector<int32_t>> ids;
    std::vector<std::vector<float>> weights;
    std::vector<std::vector<float>> norms;
    std::string configSha = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    LogitStorage storage = LogitStorage::Float32;

    int64_t numTokens() const { return static_cast<int64_t>(domainIds.size()); }
};

// Writes and finalizes the atlas; tokens ids are t % 1000.
inline void writeTinyAtlas(const std::filesystem::path& path, const TinyAtlasSpec& s)
{
    AtlasModelInfo model;
    model.checkpointPath = "/models/tiny";
    model.configSha256 = s.configSha;
    model.modelType = "mixtral";
    model.numLayers = s.moeLayers.back() + 1;
    model.moeLayers = s.moeLayers;
    model.numExperts = s.numExperts;
    model.topK = s.topK;
    model.hiddenSize = 8;
    model.configJson = "{}";
    AtlasCalibration cal;
    cal.seqLen = 1;
    cal.packing = "test";
    cal.device = "cpu";
    cal.computeDtype = "float32";
    std::vector<int64_t> offsets = s.seqOffsets;
    if (offsets.empty())
        for (int64_t t = 0; t <= s.numTokens(); ++t)
            offsets.push_back(t);
    for (size_t d = 0; d < s.domainNames.size(); ++d) {
        const auto n = std::count(s.domainIds.begin(), s.domainIds.end(), static_cast<int16_t>(d));
        int64_t seqs = 0;
        for (size_t q = 0; q + 1 < offsets.size(); ++q)
            seqs += offsets[q + 1] > offsets[q]
                && s.domainIds[static_cast<size_t>(offsets[q])] == static_cast<int16_t>(d);
        cal.domains.push_back({ s.domainNames[d], "/data/" + s.domainNames[d], "text", seqs, n });
    }
    std::vector<int32_t> tokens;
    for (int64_t t = 0; t < s.numTokens(); ++t)
        tokens.push_back(s.tokenIds.empty() ? static_cast<int32_t>(t % 1000) : s.tokenIds[static_cast<size_t>(t)]);
    AtlasCreateOptions options;
    options.logitStorage = s.storage;
    options.storeExpertNorms = !s.norms.empty();
    AtlasFile atlas = AtlasFile::create(path, model, cal, tokens, s.domainIds, offsets, options);
    for (size_t i = 0; i < s.moeLayers.size(); ++i) {
        RouterBlock b;
        b.layer = s.moeLayers[i];
        b.numTokens = s.numTokens();
        b.numExperts = s.numExperts;
        b.topK = s.topK;
        b.logits = s.logits[i].data();
        b.topkIds = s.ids[i].data();
        b.topkWeights = s.weights[i].data();
        b.expertNorms = s.norms.empty() ? nullptr : s.norms[i].data();
        atlas.writeRouterBlock(b);
        atlas.markLayerComplete(b.layer);
    }
    atlas.finalize();
}

// Random routing: logits N(mu_e, 1.5) (some negative, some positive), recorded top-k = the
// k largest logits, weights = their softmax, norms uniform [0.5, 3). Sequences of seqLen
// tokens alternate between the domains.
inline TinyAtlasSpec randomAtlas(uint32_t seed, int64_t numSequences, int64_t seqLen, int numExperts, int topK,
    int numLayers, int numDomains, bool norms)
{
    TinyAtlasSpec s;
    s.numExperts = numExperts;
    s.topK = topK;
    s.moeLayers.clear();
    for (int l = 0; l < numLayers; ++l)
        s.moeLayers.push_back(2 * l + 1);
    s.domainNames.clear();
    for (int d = 0; d < numDomains; ++d)
        s.domainNames.push_back("domain" + std::to_string(d));
    for (int64_t q = 0; q < numSequences; ++q) {
        s.seqOffsets.push_back(q * seqLen);
        for (int64_t t = 0; t < seqLen; ++t) {
            s.domainIds.push_back(static_cast<int16_t>(q % numDomains));
            s.tokenIds.push_back(static_cast<int32_t>((q * seqLen + t) * 7919 % 32000));
        }
    }
    s.seqOffsets.push_back(numSequences * seqLen);
    std::mt19937 rng(seed);
    std::normal_distribution<float> noise(0.0f, 1.5f);
    std::uniform_real_distribution<float> uniform(0.5f, 3.0f);
    const int64_t numT = s.numTokens();
    for (int l = 0; l < numLayers; ++l) {
        std::vector<float> logits, weights, norm;
        std::vector<int32_t> ids;
        std::vector<int> order(static_cast<size_t>(numExperts));
        for (int64_t t = 0; t < numT; ++t) {
            std::vector<float> r(static_cast<size_t>(numExperts));
            for (int e = 0; e < numExperts; ++e)
                r[static_cast<size_t>(e)] = noise(rng) + 0.05f * static_cast<float>(e % 7) - 0.3f;
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(),
                [&](int a, int b) { return r[static_cast<size_t>(a)] > r[static_cast<size_t>(b)]; });
            double z = 0.0;
            for (int i = 0; i < topK; ++i)
                z += std::exp(static_cast<double>(r[static_cast<size_t>(order[static_cast<size_t>(i)])]));
            for (int i = 0; i < topK; ++i) {
                const int e = order[static_cast<size_t>(i)];
                ids.push_back(e);
                weights.push_back(static_cast<float>(std::exp(static_cast<double>(r[static_cast<size_t>(e)])) / z));
                norm.push_back(uniform(rng));
            }
            logits.insert(logits.end(), r.begin(), r.end());
        }
        s.logits.push_back(std::move(logits));
        s.ids.push_back(std::move(ids));
        s.weights.push_back(std::move(weights));
        if (norms)
            s.norms.push_back(std::move(norm));
    }
    return s;
}

// Tokens [seqOffsets[q0], seqOffsets[q1]) of `s` as an atlas spec of their own.
inline TinyAtlasSpec sliceSequences(const TinyAtlasSpec& s, size_t q0, size_t q1)
{
    TinyAtlasSpec out = s;
    const int64_t b = s.seqOffsets[q0], e = s.seqOffsets[q1];
    const auto ub = static_cast<size_t>(b), ue = static_cast<size_t>(e);
    out.domainIds.assign(
        s.domainIds.begin() + static_cast<std::ptrdiff_t>(ub), s.domainIds.begin() + static_cast<std::ptrdiff_t>(ue));
    out.tokenIds.assign(
        s.tokenIds.begin() + static_cast<std::ptrdiff_t>(ub), s.tokenIds.begin() + static_cast<std::ptrdiff_t>(ue));
    out.seqOffsets.clear();
    for (size_t q = q0; q <= q1; ++q)
        out.seqOffsets.push_back(s.seqOffsets[q] - b);
    const auto cut = [&]<typename T>(const std::vector<T>& v, size_t width) {
        return std::vector(
            v.begin() + static_cast<std::ptrdiff_t>(ub * width), v.begin() + static_cast<std::ptrdiff_t>(ue * width));
    };
    for (size_t l = 0; l < s.logits.size(); ++l) {
        out.logits[l] = cut(s.logits[l], static_cast<size_t>(s.numExperts));
        out.ids[l] = cut(s.ids[l], static_cast<size_t>(s.topK));
        out.weights[l] = cut(s.weights[l], static_cast<size_t>(s.topK));
        if (!s.norms.empty())
            out.norms[l] = cut(s.norms[l], static_cast<size_t>(s.topK));
    }
    return out;
}

// The hand-computed case shared by tst_peu and tst_routing_stats (expected values are worked out
// in their comments): E = 4, k = 2, one MoE layer; domain a = tokens 0..2, domain b = token 3;
// logits with a tie, an all-negative token and a three-way tie; recorded top-2
// t0 {0,1}, t1 {0,1}, t2 {2,0}, t3 {0,1} with weights 0.75/0.25 and expert norms 2/4.
inline TinyAtlasSpec handComputedSpec()
{
    TinyAtlasSpec s;
    s.domainNames = { "a", "b" };
    s.domainIds = { 0, 0, 0, 1 };
    s.logits = { { 2, 1, 0, -1, 0, 0, -3, -5, -1, -2, -0.5f, -4, 3, 3, 3, 0 } };
    s.ids = { { 0, 1, 0, 1, 2, 0, 0, 1 } };
    s.weights = { { 0.75f, 0.25f, 0.75f, 0.25f, 0.75f, 0.25f, 0.75f, 0.25f } };
    s.norms = { { 2, 4, 2, 4, 2, 4, 2, 4 } };
    return s;
}

} // namespace moeatlas::test
