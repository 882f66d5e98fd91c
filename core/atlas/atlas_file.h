// The atlas: one HDF5 file per capture run holding model identity, calibration provenance,
// tokens with their domain ids, and per-MoE-layer routing records. Schema: docs/atlas-format.md.
// This header hides the HDF5 C API; all methods throw moeatlas::Error naming the file and object.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

struct LockWait; // util/file_lock.h

inline constexpr int kAtlasSchemaVersion = 1;

struct AtlasModelInfo {
    std::string checkpointPath;
    std::string configSha256; // hex SHA-256 of config.json's bytes
    std::string modelType;
    int numLayers = 0; // decoder layers
    std::vector<int> moeLayers; // indices of decoder layers that have a router
    int numExperts = 0;
    int topK = 0;
    int64_t hiddenSize = 0;
    std::string configJson; // the whole config.json, verbatim
    // How the router scores its logits: "softmax" or "sigmoid" (the DeepSeek-style router of glm4_moe); with
    // "sigmoid", the group-limited selection's settings and every MoE layer's e_score_correction_bias
    // ([moeLayers.size()][numExperts], empty when the router has none). Atlases without them are softmax.
    std::string router = "softmax";
    int routerGroups = 1; // n_group
    int routerTopkGroup = 1; // topk_group
    bool routerNormTopkProb = false;
    double routerScalingFactor = 1.0; // routed_scaling_factor
    std::vector<std::vector<float>> correctionBias;
};

struct AtlasDomain {
    std::string name;
    std::string source; // file path as given
    std::string format; // "input_ids-jsonl", "text", ...
    int64_t numSamples = 0; // sequences after packing
    int64_t numTokens = 0;
};

struct AtlasCalibration {
    std::vector<AtlasDomain> domains;
    int64_t seqLen = 0;
    uint64_t seed = 0;
    std::string packing; // human-readable description of the packing choices
    std::string device; // "cpu", "cuda:0"
    std::string computeDtype; // "float32", "bfloat16"
};

enum class LogitStorage { Float16, Float32 };

struct AtlasCreateOptions {
    LogitStorage logitStorage = LogitStorage::Float32;
    bool storeExpertNorms = false; // per (token, slot) L2 norm of the routed expert's output
    int hiddenSampleCount = 0; // tokens whose hidden state (MoE input) is kept per layer
    int compressionLevel = 4; // gzip level for chunked datasets (0 = off)
};

// Routing records of one MoE layer for a contiguous token range [tokenBegin, tokenBegin + numTokens).
struct RouterBlock {
    int layer = 0; // decoder layer index
    int64_t tokenBegin = 0;
    int64_t numTokens = 0;
    int numExperts = 0;
    int topK = 0;
    const float* logits = nullptr; // [numTokens, numExperts], raw router logits (fp32)
    const int32_t* topkIds = nullptr; // [numTokens, topK]
    const float* topkWeights = nullptr; // [numTokens, topK], weights used to mix expert outputs
    const float* expertNorms = nullptr; // [numTokens, topK] or nullptr
};

// Hidden-state samples of one layer as stored under /layers/<layer>/hidden_samples.
struct AtlasHiddenSamples {
    std::vector<int64_t> tokenIndices; // [n]
    std::vector<float> values; // [n, hiddenSize]
};

// One float64 array of derived results (scores, statistics) stored under /scores or /statistics.
struct AtlasArray {
    std::string name; // dataset name inside the result group (no '/')
    std::vector<uint64_t> dims; // row-major shape
    std::vector<double> values; // product(dims) values
};

// A result group: /scores/<criterion> or /statistics (docs/atlas-format.md, "Scores and
// statistics"). paramsJson and inputsHash are string attributes; arrays are float64 datasets.
struct AtlasResults {
    std::string paramsJson;
    std::string inputsHash;
    std::vector<AtlasArray> arrays;
    const AtlasArray* find(const std::string& name) const;
};

// What a capture with --prefetch records under /prefetch (docs/atlas-format.md).
struct AtlasPrefetchInfo {
    std::vector<std::string> predictors; // recorded ones: "next-router", "quasi-hidden", "linear", "mlp"
    int maxLookahead = 0; // 1..3, in MoE layers
    int budget = 0; // experts stored per prediction, best first (k <= budget <= E)
    double trainFraction = 0.0;
    uint64_t splitSeed = 0;
    std::vector<uint8_t> trainSequences; // [S]: 1 = training sequence
};

// Parameters and losses of one learned estimator under /prefetch/learned/<predictor>/<layer>/d<d>.
struct AtlasLearnedEstimator {
    std::vector<AtlasArray> parameters; // float32 datasets (AtlasArray values are converted)
    double trainLoss = 0.0;
    double heldoutLoss = 0.0;
    int64_t epochs = 0;
    int64_t trainTokens = 0;
    std::string optionsJson; // how it was trained (attribute `options`); empty when not recorded
};

// Writer/reader of an atlas file. A new atlas is created under "<path>.partial"; finalize()
// marks it complete and renames it to <path>. An interrupted capture leaves the .partial file
// valid (flushed after every layer) with "/progress" saying which layers are complete, and
// openForResume() continues it.
// Thread safety: the HDF5 library in use is not thread-safe; every method takes one
// process-wide lock, so distinct AtlasFile objects may be used from different threads.
class AtlasFile {
public:
    ~AtlasFile();
    AtlasFile(AtlasFile&&) noexcept;
    AtlasFile& operator=(AtlasFile&&) noexcept;

    // Creates "<finalPath>.partial" (replacing a stale one), writes model, calibration, tokens
    // ([T] int32), token domain ids ([T] int16), sequence offsets ([S+1] int64), and allocates
    // one group per MoE layer with chunked, compressed datasets sized for all T tokens.
    static AtlasFile create(const std::filesystem::path& finalPath, const AtlasModelInfo& model,
        const AtlasCalibration& calibration, std::span<const int32_t> tokens, std::span<const int16_t> domainIds,
        std::span<const int64_t> seqOffsets, const AtlasCreateOptions& options);
    // Opens "<finalPath>.partial" to continue a capture; throws InputError when it is missing
    // or not an atlas. The caller compares model()/tokens() with its run, or uses the overload.
    // Layers not marked complete are emptied (recreated): resume rewrites them whole.
    static AtlasFile openForResume(const std::filesystem::path& finalPath);
    // As above, and throws InputError when the partial atlas was made from a different model
    // (configSha256, moeLayers, numExperts, topK) or different calibration tokens.
    static AtlasFile openForResume(const std::filesystem::path& finalPath, const AtlasModelInfo& expectedModel,
        std::span<const int32_t> expectedTokens);
    // Opens an atlas read-only: a finished one, or a .partial one (isComplete() false; only
    // completedLayers() hold meaningful records).
    static AtlasFile openReadOnly(const std::filesystem::path& path);

    // The file currently open (the .partial path while writing, the final path after finalize).
    const std::filesystem::path& path() const;
    // True once finalize() has run (root attribute complete = 1).
    bool isComplete() const;

    const AtlasModelInfo& model() const;
    const AtlasCalibration& calibration() const;
    const AtlasCreateOptions& options() const;
    int64_t numTokens() const;
    std::vector<int32_t> tokens() const;
    std::vector<int16_t> domainIds() const;
    std::vector<int64_t> seqOffsets() const;

    // Writes one block of routing records into /layers/<layer>/... Blocks may come in any
    // order; a block into a layer already marked complete throws. expertNorms is required when
    // options().storeExpertNorms and ignored otherwise.
    void writeRouterBlock(const RouterBlock& block);
    // Hidden-state samples of one layer: token indices [n] and values [n, hidden] (fp32).
    // Replaces samples written before for that layer; throws once the layer is complete.
    void writeHiddenSamples(int layer, std::span<const int64_t> tokenIndices, std::span<const float> values);
    // Records that a layer's records are complete and flushes the file to disk.
    void markLayerComplete(int layer);
    std::vector<int> completedLayers() const;

    // Marks the atlas complete (attribute "complete" = 1), closes it and renames .partial to the
    // final path. The object is closed afterwards. Throws Error when a MoE layer is not complete.
    // The rename waits for the update lock of the final path (lockPathFor; up to 10 minutes), so
    // an update of an older atlas of that name cannot commit over the new capture.
    void finalize();

    // Reading back (for tests, score, GUI): whole datasets of one layer.
    std::vector<float> readLogits(int layer) const; // [T, E] as fp32
    std::vector<int32_t> readTopkIds(int layer) const; // [T, k]
    std::vector<float> readTopkWeights(int layer) const; // [T, k]
    std::vector<float> readExpertNorms(int layer) const; // [T, k]; empty when not stored
    // Rows [tokenBegin, tokenBegin + numTokens) of router_logits as fp32, for files too large
    // to read a whole layer at once.
    std::vector<float> readLogits(int layer, int64_t tokenBegin, int64_t numTokens) const;
    // Empty when none were written for the layer.
    AtlasHiddenSamples readHiddenSamples(int layer) const;

    // ---- derived results (scores, statistics, evaluation and Fisher tables) -------------------
    // Opens a complete atlas to add results (docs/atlas-format.md, "Updates"). The atlas is never
    // written in place (HDF5 1.10 has no journal: a crash mid-flush could make the whole file
    // unreadable, and with it the capture): result groups go to a new file with a unique name,
    // "<path>.update-XXXXXX" beside the atlas, and commitUpdate() copies every other object of the
    // atlas into it (H5Ocopy: compact, whatever was replaced is left behind) and renames it over
    // the atlas. Dropping the object without commitUpdate() removes that file.
    // Updates of one atlas take turns: the update holds an exclusive lock on "<path>.lock"
    // (lockPathFor) from here until commitUpdate() or the object's end, and the atlas is read
    // only once the lock is taken, so an update never loses what another committed meanwhile.
    // The first overload waits up to 10 minutes; `wait` sets the time, a callback told who holds
    // the lock while waiting, and what this update says it is doing. Throws InputError naming the
    // lock file and its holder when the wait times out, Cancelled when the callback says stop.
    static AtlasFile openForUpdate(const std::filesystem::path& path);
    static AtlasFile openForUpdate(const std::filesystem::path& path, const LockWait& wait);
    // The lock file of updates of `atlas`: "<atlas>.lock" beside the file the atlas path names
    // (symlinks resolved). It exists only while an update holds it (or after one was killed).
    static std::filesystem::path lockPathFor(const std::filesystem::path& atlas);
    // Replaces the group `group` ("scores/peu", "statistics"), creating parents as needed.
    void writeResults(const std::string& group, const AtlasResults& results);
    // The results stored under `group`; empty optional when the group does not exist.
    std::optional<AtlasResults> readResults(const std::string& group) const;
    // The same with only the datasets named in `arrays` (absent ones are skipped; empty: all), so
    // one small array of a large group (/fisher/<form>/experts next to its units) is read alone.
    std::optional<AtlasResults> readResults(const std::string& group, const std::vector<std::string>& arrays) const;
    // Names of the subgroups of `group` (e.g. the criteria under "scores"); empty when absent.
    std::vector<std::string> resultGroups(const std::string& group) const;
    // Copies the rest of the atlas into the update's file, flushes and syncs it, renames it over
    // the atlas and releases the lock. The object stays open, read-only, on the updated atlas.
    void commitUpdate();
    // Rows [tokenBegin, tokenBegin + numTokens) of topk_ids / topk_weights / expert_norms
    // (norms: empty when not stored).
    std::vector<int32_t> readTopkIds(int layer, int64_t tokenBegin, int64_t numTokens) const;
    std::vector<float> readTopkWeights(int layer, int64_t tokenBegin, int64_t numTokens) const;
    std::vector<float> readExpertNorms(int layer, int64_t tokenBegin, int64_t numTokens) const;

    // ---- /prefetch: expert predictions recorded by a capture (docs/atlas-format.md) ----------
    // Writing (a capture's partial atlas): createPrefetch once, before the first prediction, allocates
    // every <predictor>/<layer>/d<d> dataset ([T, budget]) and writes the attributes and the split;
    // blocks then come in any order, until the target layer (layer + lookahead MoE layers) is
    // marked complete. Throws Error on an atlas opened read-only or for update.
    void createPrefetch(const AtlasPrefetchInfo& info);
    void writePrefetchBlock(const std::string& predictor, int layer, int lookahead, int64_t tokenBegin,
        int64_t numTokens, const int32_t* ids);
    void writeDefaultVectors(int layer, std::span<const float> values, std::span<const int64_t> counts);
    void writeLearnedEstimator(const std::string& predictor, int layer, int lookahead, const AtlasLearnedEstimator& e);
    // Reading: empty optional when the atlas has no /prefetch.
    std::optional<AtlasPrefetchInfo> prefetchInfo() const;
    // [T, budget] predictions of `predictor` made at MoE layer `layer` for lookahead `lookahead`;
    // InputError naming the dataset when it is absent.
    std::vector<int32_t> readPrefetchIds(const std::string& predictor, int layer, int lookahead) const;
    // [E, H] default vectors and [E] counts of a layer; both empty when not recorded.
    std::pair<std::vector<float>, std::vector<int64_t>> readDefaultVectors(int layer) const;
    std::optional<AtlasLearnedEstimator> readLearnedEstimator(
        const std::string& predictor, int layer, int lookahead) const;

private:
    struct Impl;
    explicit AtlasFile(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

} // namespace moeatlas
