// Deterministic atlas contents shared by the atlas suites. tests/atlas/read_atlas.py computes
// the same values with numpy float32 arithmetic, so any change here must be mirrored there.
#pragma once

#include "atlas/atlas_file.h"
#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace moeatlas::test {

struct AtlasTestData {
    AtlasModelInfo model;
    AtlasCalibration calibration;
    std::vector<int32_t> tokens;
    std::vector<int16_t> domainIds;
    std::vector<int64_t> seqOffsets;
};

// numSequences sequences of seqLen tokens; the first 3/5 (rounded) belong to domain 0.
inline AtlasTestData makeTestData(int64_t seqLen = 500, int64_t numSequences = 5, int numExperts = 8, int topK = 2)
{
    AtlasTestData d;
    d.model.checkpointPath = "/models/tiny-moe";
    d.model.configSha256 = "3f2a9c0e5b7d41e6a8c1f0d2b3e4a5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2";
    d.model.modelType = "mixtral";
    d.model.numLayers = 4;
    d.model.moeLayers = { 1, 3 };
    d.model.numExperts = numExperts;
    d.model.topK = topK;
    d.model.hiddenSize = 16;
    d.model.configJson = R"({"model_type": "mixtral", "num_local_experts": 8, "name": "tiny \u00e9"})";

    const int64_t domain0 = (numSequences * 3 + 4) / 5;
    d.calibration.seqLen = seqLen;
    d.calibration.seed = 9223372036854775813ull; // above INT64_MAX: checks uint64 storage
    d.calibration.packing = "concat documents, seq_len 500, drop remainder";
    d.calibration.device = "cpu";
    d.calibration.computeDtype = "float32";
    d.calibration.domains = {
        { "code", "/data/code.jsonl", "input_ids-jsonl", domain0, domain0 * seqLen },
        { "prose \u00e9", "/data/prose.txt", "text", numSequences - domain0, (numSequences - domain0) * seqLen },
    };

    const int64_t numTokens = seqLen * numSequences;
    for (int64_t t = 0; t < numTokens; ++t) {
        d.tokens.push_back(static_cast<int32_t>((t * 7919) % 32000));
        d.domainIds.push_back(static_cast<int16_t>(t / seqLen < domain0 ? 0 : 1));
    }
    for (int64_t s = 0; s <= numSequences; ++s)
        d.seqOffsets.push_back(s * seqLen);
    return d;
}

// Values that exercise fp16 rounding, overflow, underflow and specials; placed on token 0 of
// the first MoE layer (experts 0..7).
inline const std::vector<float>& specialLogits()
{
    static const std::vector<float> values = { 65504.0f, 70000.0f, 1e-8f, -0.0f, std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), 3e-5f };
    return values;
}

inline float testLogit(int layer, int64_t t, int e)
{
    if (layer == 1 && t == 0 && e < static_cast<int>(specialLogits().size()))
        return specialLogits()[static_cast<size_t>(e)];
    const auto m = static_cast<float>((t * 31 + e * 17 + layer * 13) % 1000);
    return m * 0.0137f - 6.9f;
}

inline int32_t testTopkId(int layer, int64_t t, int slot, int numExperts)
{
    return static_cast<int32_t>((t + slot * (layer + 1)) % numExperts);
}

inline float testTopkWeight(int64_t t, int slot)
{
    return static_cast<float>(t % 10 + slot + 1) * 0.125f;
}

inline float testExpertNorm(int layer, int64_t t, int slot)
{
    return static_cast<float>(t % 7) * 0.5f + static_cast<float>(slot + layer);
}

inline std::vector<int64_t> testHiddenIndices(int64_t numTokens)
{
    return { 0, 17, numTokens / 2, numTokens - 1 };
}

inline float testHiddenValue(int layer, int64_t i, int64_t h)
{
    return static_cast<float>(i * 100) + static_cast<float>(h) * 0.25f - static_cast<float>(layer);
}

// Routing records of one layer for tokens [begin, begin + count), owning its buffers.
struct TestBlock {
    std::vector<float> logits, weights, norms;
    std::vector<int32_t> ids;
    RouterBlock block;
};

inline TestBlock makeTestBlock(const AtlasModelInfo& model, int layer, int64_t begin, int64_t count, bool withNorms)
{
    TestBlock b;
    const int e = model.numExperts, k = model.topK;
    for (int64_t t = begin; t < begin + count; ++t) {
        for (int x = 0; x < e; ++x)
            b.logits.push_back(testLogit(layer, t, x));
        for (int j = 0; j < k; ++j) {
            b.ids.push_back(testTopkId(layer, t, j, e));
            b.weights.push_back(testTopkWeight(t, j));
            b.norms.push_back(testExpertNorm(layer, t, j));
        }
    }
    b.block = { layer, begin, count, e, k, b.logits.data(), b.ids.data(), b.weights.data(),
        withNorms ? b.norms.data() : nullptr };
    return b;
}

// Writes a whole layer in blocks of blockTokens, in a shuffled order (fixed seed).
inline void writeTestLayer(AtlasFile& atlas, int layer, int64_t blockTokens = 300, uint32_t orderSeed = 7)
{
    const int64_t numTokens = atlas.numTokens();
    std::vector<int64_t> starts;
    for (int64_t b = 0; b < numTokens; b += blockTokens)
        starts.push_back(b);
    std::shuffle(starts.begin(), starts.end(), std::mt19937(orderSeed));
    for (int64_t b : starts) {
        const TestBlock block = makeTestBlock(
            atlas.model(), layer, b, std::min(blockTokens, numTokens - b), atlas.options().storeExpertNorms);
        atlas.writeRouterBlock(block.block);
    }
}

inline void writeTestHiddenSamples(AtlasFile& atlas, int layer)
{
    const std::vector<int64_t> indices = testHiddenIndices(atlas.numTokens());
    std::vector<float> values;
    for (size_t i = 0; i < indices.size(); ++i)
        for (int64_t h = 0; h < atlas.model().hiddenSize; ++h)
            values.push_back(testHiddenValue(layer, static_cast<int64_t>(i), h));
    atlas.writeHiddenSamples(layer, indices, values);
}

// Runs `body` and returns the message of the moeatlas error it throws ("" when none).
template <typename Exception = Error, typename Body> std::string errorOf(Body body)
{
    try {
        body();
    } catch (const Exception& e) {
        return e.what();
    }
    return {};
}

inline bool contains(const std::string& text, const std::string& part)
{
    return text.find(part) != std::string::npos;
}

} // namespace moeatlas::test
