// The atlas: one HDF5 file per capture run holding model identity, calibration provenance,
// tokens with their domain ids, and per-MoE-layer routing records. Schema: docs/atlas-format.md.
// This header hides the HDF5 C API; all methods throw moeatlas::Error naming the file and object.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

inline constexpr int kAtlasSchemaVersion = 1;

struct AtlasModelInfo {
    std::string checkpointPath;
    std::string configSha256;        // hex SHA-256 of config.json's bytes
    std::string modelType;
    int numLayers = 0;               // decoder layers
    std::vector<int> moeLayers;      // indices of decoder layers that have a router
    int numExperts = 0;
    int topK = 0;
    int64_t hiddenSize = 0;
    std::string configJson;          // the whole config.json, verbatim
};

struct AtlasDomain {
    std::string name;
    std::string source;              // file path as given
    std::string format;              // "input_ids-jsonl", "text", ...
    int64_t numSamples = 0;          // sequences after packing
    int64_t numTokens = 0;
};

struct AtlasCalibration {
    std::vector<AtlasDomain> domains;
    int64_t seqLen = 0;
    uint64_t seed = 0;
    std::string packing;             // human-readable description of the packing choices
    std::string device;              // "cpu", "cuda:0"
    std::string computeDtype;        // "float32", "bfloat16"
};

enum class LogitStorage { Float16, Float32 };

struct AtlasCreateOptions {
    LogitStorage logitStorage = LogitStorage::Float32;
    bool storeExpertNorms = false;   // per (token, slot) L2 norm of the routed expert's output
    int hiddenSampleCount = 0;       // tokens whose hidden state (MoE input) is kept per layer
    int compressionLevel = 4;        // gzip level for chunked datasets (0 = off)
};

// Routing records of one MoE layer for a contiguous token range [tokenBegin, tokenBegin + numTokens).
struct RouterBlock {
    int layer = 0;                   // decoder layer index
    int64_t tokenBegin = 0;
    int64_t numTokens = 0;
    int numExperts = 0;
    int topK = 0;
    const float* logits = nullptr;       // [numTokens, numExperts], raw router logits (fp32)
    const int32_t* topkIds = nullptr;    // [numTokens, topK]
    const float* topkWeights = nullptr;  // [numTokens, topK], weights used to mix expert outputs
    const float* expertNorms = nullptr;  // [numTokens, topK] or nullptr
};

// Writer/reader of an atlas file. A new atlas is created under "<path>.partial"; finalize()
// marks it complete and renames it to <path>. An interrupted capture leaves the .partial file
// valid (flushed after every layer) with "/progress" saying which layers are complete, and
// openForResume() continues it.
class AtlasFile {
public:
    ~AtlasFile();
    AtlasFile(AtlasFile&&) noexcept;
    AtlasFile& operator=(AtlasFile&&) noexcept;

    // Creates "<finalPath>.partial" (replacing a stale one), writes model, calibration, tokens
    // ([T] int32), token domain ids ([T] int16), sequence offsets ([S+1] int64), and allocates
    // one group per MoE layer with chunked, compressed datasets sized for all T tokens.
    static AtlasFile create(const std::filesystem::path& finalPath, const AtlasModelInfo& model,
                            const AtlasCalibration& calibration, std::span<const int32_t> tokens,
                            std::span<const int16_t> domainIds, std::span<const int64_t> seqOffsets,
                            const AtlasCreateOptions& options);
    // Opens "<finalPath>.partial" to continue a capture; throws InputError when it is missing,
    // not an atlas, or was made from a different model/calibration (compare configSha256, tokens).
    static AtlasFile openForResume(const std::filesystem::path& finalPath);
    // Opens a finished atlas read-only.
    static AtlasFile openReadOnly(const std::filesystem::path& path);

    const AtlasModelInfo& model() const;
    const AtlasCalibration& calibration() const;
    const AtlasCreateOptions& options() const;
    int64_t numTokens() const;
    std::vector<int32_t> tokens() const;
    std::vector<int16_t> domainIds() const;
    std::vector<int64_t> seqOffsets() const;

    // Writes one block of routing records into /layers/<layer>/...
    void writeRouterBlock(const RouterBlock& block);
    // Hidden-state samples of one layer: token indices [n] and values [n, hidden] (fp32).
    void writeHiddenSamples(int layer, std::span<const int64_t> tokenIndices,
                            std::span<const float> values);
    // Records that a layer's records are complete and flushes the file to disk.
    void markLayerComplete(int layer);
    std::vector<int> completedLayers() const;

    // Marks the atlas complete (attribute "complete" = 1), closes it and renames .partial to the
    // final path. The object is closed afterwards.
    void finalize();

    // Reading back (for tests, score, GUI): whole datasets of one layer.
    std::vector<float> readLogits(int layer) const;        // [T, E] as fp32
    std::vector<int32_t> readTopkIds(int layer) const;     // [T, k]
    std::vector<float> readTopkWeights(int layer) const;   // [T, k]
    std::vector<float> readExpertNorms(int layer) const;   // [T, k]; empty when not stored

private:
    struct Impl;
    explicit AtlasFile(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

} // namespace moeatlas
