#include "runtime/capture.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/safetensors_writer.h"
#include "checkpoint/tensor_layout.h"
#include "text/tokenizer.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/half.h"
#include "util/sha256.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <set>

#include <sys/resource.h>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

// The router's kind and, for the sigmoid router, its group settings and every MoE layer's
// e_score_correction_bias as the checkpoint stores it (F32, BF16 or F16), for /model (atlas-format.md).
void recordRouter(const Checkpoint& ckpt, const ModelSpec& spec, AtlasModelInfo& model)
{
    const RouterSpec& r = spec.router;
    if (!r.sigmoid())
        return;
    model.router = "sigmoid";
    model.routerGroups = r.numGroups;
    model.routerTopkGroup = r.topkGroup;
    model.routerNormTopkProb = r.normTopkProb;
    model.routerScalingFactor = r.scalingFactor;
    if (!r.correctionBias)
        return;
    const TensorLayout layout(ckpt, spec);
    for (const int l : spec.moeLayerIndices()) {
        const std::string name = layout.correctionBiasName(l);
        const TensorInfo& info = ckpt.info(name);
        const std::span<const std::byte> bytes = ckpt.bytes(name);
        std::vector<float> row(static_cast<std::size_t>(r.numExperts));
        for (std::size_t e = 0; e < row.size(); ++e) {
            if (info.dtype == DType::F32) {
                std::memcpy(&row[e], bytes.data() + 4 * e, 4);
            } else if (info.dtype == DType::BF16 || info.dtype == DType::F16) {
                uint16_t h = 0;
                std::memcpy(&h, bytes.data() + 2 * e, 2);
                if (info.dtype == DType::F16) {
                    row[e] = halfToFloat(h);
                } else {
                    const uint32_t bits = uint32_t { h } << 16;
                    std::memcpy(&row[e], &bits, 4);
                }
            } else {
                throw InputError(ckpt.fileOf(name).path().string() + ": tensor '" + name + "' has dtype "
                    + std::string(dtypeName(info.dtype)) + ", expected F32, BF16 or F16");
            }
        }
        model.correctionBias.push_back(std::move(row));
    }
}

// Writes routing records into the atlas and, after each layer, the resume state.
class AtlasObserver : public ExecutionObserver {
public:
    AtlasObserver(AtlasFile& atlas, fs::path resumePath, int64_t hiddenSize, bool saveResume)
        : m_atlas(atlas)
        , m_resumePath(std::move(resumePath))
        , m_hidden(hiddenSize)
        , m_saveResume(saveResume)
        , m_moeLayers(atlas.model().moeLayers.begin(), atlas.model().moeLayers.end())
        , m_moeOrder(atlas.model().moeLayers)
    {
    }

    // Layers already complete in a resumed atlas may be recomputed (the resume state can lag the
    // atlas by one layer); their records are identical (with the same machine and thread count) and are
    // not written again either way.
    void skipLayers(const std::vector<int>& layers) { m_skip.insert(layers.begin(), layers.end()); }

    void onRouterBlock(const RouterBlock& block) override
    {
        if (!m_skip.count(block.layer))
            m_atlas.writeRouterBlock(block);
    }

    // Predictions for a target layer already complete were written with it.
    void onPrefetchBlock(const PrefetchBlock& b) override
    {
        if (!m_skip.count(b.targetLayer))
            m_atlas.writePrefetchBlock(
                predictorName(b.predictor), b.layer, b.lookahead, b.tokenBegin, b.numTokens, b.ids);
    }

    void onDefaultVectors(int layer, std::span<const float> values, std::span<const int64_t> counts) override
    {
        if (!m_skip.count(layer))
            m_atlas.writeDefaultVectors(layer, values, counts);
    }

    void onLearnedEstimator(Predictor p, int layer, int lookahead, const AtlasLearnedEstimator& e) override
    {
        // Its target, `lookahead` MoE layers after `layer`, is the layer being completed.
        const auto at = std::find(m_moeOrder.begin(), m_moeOrder.end(), layer);
        const int target = m_moeOrder[static_cast<std::size_t>(at - m_moeOrder.begin() + lookahead)];
        if (!m_skip.count(target))
            m_atlas.writeLearnedEstimator(predictorName(p), layer, lookahead, e);
    }

    void onPrefetchState(int layer, PrefetchState&& state) override
    {
        (void)layer;
        m_prefetch = std::move(state);
        m_hasPrefetch = true;
    }

    void onHiddenSamples(int layer, std::span<const int64_t> idx, std::span<const float> values) override
    {
        auto& acc = m_samples[layer];
        acc.first.insert(acc.first.end(), idx.begin(), idx.end());
        acc.second.insert(acc.second.end(), values.begin(), values.end());
    }

    bool wantsHiddenSnapshots() const override { return m_saveResume; }

    void onLayerComplete(int layer, std::span<const float> hidden) override
    {
        const auto it = m_samples.find(layer);
        if (it != m_samples.end() && !m_skip.count(layer)) {
            m_atlas.writeHiddenSamples(layer, it->second.first, it->second.second);
            m_samples.erase(it);
        }
        if (m_moeLayers.count(layer) && !m_skip.count(layer))
            m_atlas.markLayerComplete(layer); // flushes: the records are on disk first
        if (m_saveResume) {
            SafetensorsWriter w(m_resumePath);
            w.setMetadata({ { "completed_layer", std::to_string(layer) } });
            const int64_t tokens = static_cast<int64_t>(hidden.size()) / m_hidden;
            w.declare("hidden", DType::F32, { tokens, m_hidden });
            // Expert prefetching: the held layers' states (runtime/prefetch_capture.h), so that a resumed
            // capture predicts from the same numbers.
            std::vector<std::pair<std::string, const std::vector<float>*>> extra;
            if (m_hasPrefetch) {
                std::string layers;
                for (std::size_t i = 0; i < m_prefetch.layers.size(); ++i) {
                    const std::string l = std::to_string(m_prefetch.layers[i]);
                    layers += (layers.empty() ? "" : ",") + l;
                    extra.emplace_back("prefetch.hidden." + l, &m_prefetch.hidden[i]);
                    if (!m_prefetch.quasi[i].empty())
                        extra.emplace_back("prefetch.quasi." + l, &m_prefetch.quasi[i]);
                    if (!m_prefetch.features[i].empty())
                        extra.emplace_back("prefetch.features." + l, &m_prefetch.features[i]);
                }
                w.setMetadata({ { "completed_layer", std::to_string(layer) }, { "prefetch_layers", layers } });
            }
            for (const auto& [name, values] : extra)
                w.declare(name, DType::F32, { tokens, m_hidden });
            w.write("hidden", std::as_bytes(hidden));
            for (const auto& [name, values] : extra)
                w.write(name, std::as_bytes(std::span<const float>(*values)));
            w.finish();
            m_prefetch = PrefetchState {};
            m_hasPrefetch = false;
        }
    }

private:
    AtlasFile& m_atlas;
    fs::path m_resumePath;
    int64_t m_hidden;
    bool m_saveResume;
    std::set<int> m_moeLayers;
    std::vector<int> m_moeOrder;
    std::set<int> m_skip;
    std::map<int, std::pair<std::vector<int64_t>, std::vector<float>>> m_samples;
    PrefetchState m_prefetch; // the latest onPrefetchState, until the resume state is written
    bool m_hasPrefetch = false;
};

// The expert-prefetch state a resume continues from: the held layers of "prefetch_layers" (absent: the
// interrupted capture ran without --prefetch).
PrefetchState readPrefetchState(const SafetensorsFile& state, bool quasi, bool learned)
{
    const auto& meta = state.metadata();
    const auto it = meta.find("prefetch_layers");
    if (it == meta.end())
        throw InputError(state.path().string() + ": the interrupted capture ran without --prefetch; resume without "
            + "it, or delete the partial atlas to start over");
    PrefetchState out;
    const auto read = [&](const std::string& name) {
        if (!state.contains(name))
            throw InputError(state.path().string() + ": " + name + " is missing (the interrupted capture recorded "
                + "other predictors; give the same --prefetch options)");
        const auto bytes = state.bytes(name);
        std::vector<float> values(bytes.size() / sizeof(float));
        std::memcpy(values.data(), bytes.data(), bytes.size());
        return values;
    };
    std::size_t pos = 0;
    const std::string& list = it->second;
    while (pos < list.size()) {
        const std::size_t comma = std::min(list.find(',', pos), list.size());
        const std::string layer = list.substr(pos, comma - pos);
        out.layers.push_back(std::stoi(layer));
        out.hidden.push_back(read("prefetch.hidden." + layer));
        out.quasi.push_back(quasi ? read("prefetch.quasi." + layer) : std::vector<float> {});
        out.features.push_back(learned ? read("prefetch.features." + layer) : std::vector<float> {});
        pos = comma + 1;
    }
    return out;
}

std::string readFile(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    return { std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>() };
}

std::vector<int64_t> chooseSampleTokens(int64_t totalTokens, int count, uint64_t seed)
{
    if (count <= 0 || totalTokens <= 0)
        return {};
    std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
    std::set<int64_t> chosen;
    const int64_t want = std::min<int64_t>(count, totalTokens);
    while (static_cast<int64_t>(chosen.size()) < want)
        chosen.insert(static_cast<int64_t>(rng() % static_cast<uint64_t>(totalTokens)));
    return { chosen.begin(), chosen.end() };
}

} // namespace

CapturePrefetch validatePrefetch(const CapturePrefetch& prefetch, const ModelSpec& spec)
{
    CapturePrefetch out = prefetch;
    out.predictors.clear();
    for (const Predictor p : kAllPredictors) {
        const auto n = std::count(prefetch.predictors.begin(), prefetch.predictors.end(), p);
        if (n > 1)
            throw RequestError("prefetch", "predictor '" + predictorName(p) + "' is named twice");
        if (n == 0)
            continue;
        if (!isRecorded(p))
            throw RequestError("prefetch",
                "'" + predictorName(p) + "' is not recorded by capture (it records next-router, quasi-hidden, linear "
                    + "and mlp): it is derived from the recorded routing when the hit rates are computed");
        out.predictors.push_back(p);
    }
    if (out.predictors.empty())
        return out;
    const int moeLayers = spec.numMoeLayers();
    const int most = std::min(3, moeLayers - 1);
    if (most < 1)
        throw RequestError("prefetch",
            "the model has " + std::to_string(moeLayers)
                + " MoE layer: there is no later MoE layer to predict the experts of");
    out.maxLookahead = prefetch.maxLookahead == 0 ? most : prefetch.maxLookahead;
    if (out.maxLookahead < 1 || out.maxLookahead > most)
        throw RequestError("prefetchLookahead",
            "lookahead " + std::to_string(prefetch.maxLookahead) + " MoE layers: expected 1.." + std::to_string(most)
                + " (the model has " + std::to_string(moeLayers) + " MoE layers; at most 3 ahead are recorded)");
    const int E = spec.router.numExperts, k = spec.router.topK;
    out.budget = prefetch.budget == 0 ? std::min(2 * k, E) : prefetch.budget;
    if (out.budget < k || out.budget > E)
        throw RequestError("prefetchBudget",
            "budget " + std::to_string(prefetch.budget) + " experts: expected " + std::to_string(k) + ".."
                + std::to_string(E) + " (from the model's top-k to its expert count)");
    if (!(prefetch.trainFraction > 0.0 && prefetch.trainFraction < 1.0))
        throw RequestError("prefetchTrainFraction",
            "training fraction " + std::to_string(prefetch.trainFraction)
                + " must lie in (0, 1): some sequences train, the others are held out");
    return out;
}

fs::path resumeStatePath(const fs::path& output)
{
    fs::path p = output;
    p += ".resume.safetensors";
    return p;
}

CalibrationSet loadCalibration(const CalibrationInput& params, const fs::path& checkpoint, int64_t vocabSize)
{
    // Decide first whether a tokenizer is needed, so that input_ids-only runs never read one.
    std::string textDomain;
    for (const DomainSource& d : params.domains)
        if (textDomain.empty() && isTextFormat(detectFormat(d.path, params.text)))
            textDomain = d.name + " (" + d.path + ")";
    const bool needBos = params.addBos && !params.packing.bosToken;
    if (textDomain.empty() && !needBos)
        return buildCalibrationSet(params.domains, params.packing, params.text, nullptr, {}, vocabSize);

    fs::path path = params.tokenizer;
    std::error_code ec;
    if (!path.empty()) {
        if (fs::is_directory(path, ec))
            path /= "tokenizer.json";
        if (!fs::exists(path, ec))
            throw RequestError("tokenizer", "tokenizer " + params.tokenizer.string() + ": no such file");
    } else {
        path = checkpoint / "tokenizer.json";
        if (!fs::exists(path, ec))
            throw RequestError(textDomain.empty() ? "addBos" : "tokenizer",
                (textDomain.empty() ? "the BOS token to add comes from the tokenizer"
                                    : "domain " + textDomain + " is text and needs a tokenizer")
                    + ", but " + path.string() + " does not exist; give a tokenizer file"
                    + (textDomain.empty() ? " or a BOS token id" : ""));
    }
    path = fs::absolute(path);
    const Tokenizer tokenizer = Tokenizer::fromFile(path.string());
    PackingOptions packing = params.packing;
    if (needBos) {
        packing.bosToken = tokenizer.bosTokenId();
        if (!packing.bosToken)
            throw RequestError("bosToken",
                "the BOS token to add comes from the tokenizer, but " + path.string()
                    + " names none (no bos_token in a tokenizer_config.json beside it, none in its "
                      "template); give a BOS token id");
    }
    const std::string description = path.string() + " (sha256 " + sha256Hex(readFile(path)) + ")";
    return buildCalibrationSet(params.domains, packing, params.text, &tokenizer, description, vocabSize);
}

CaptureSummary runCapture(const CaptureParams& params, const ProgressFn& progress, const StopToken* stop)
{
    const Checkpoint ckpt(params.checkpoint);
    const fs::path configPath = ckpt.dir() / "config.json";
    const ModelSpec spec = parseModelSpec(ckpt.config(), configPath.string());
    if (spec.numMoeLayers() == 0)
        throw InputError(configPath.string() + ": the model has no MoE layer to record");
    if (!params.resume && fs::exists(params.output) && !params.overwrite)
        throw RequestError("overwrite", params.output.string() + ": already exists and is not replaced");
    ensureWritableDirectory(params.output);

    const CapturePrefetch prefetch = validatePrefetch(params.prefetch, spec);
    const CalibrationSet calib = loadCalibration(params, spec.vocabSize);
    std::vector<int32_t> tokens;
    std::vector<int16_t> domainIds;
    std::vector<int64_t> offsets { 0 };
    for (std::size_t d = 0; d < calib.domains.size(); ++d)
        for (const auto& seq : calib.domains[d].sequences) {
            tokens.insert(tokens.end(), seq.begin(), seq.end());
            domainIds.insert(domainIds.end(), seq.size(), static_cast<int16_t>(d));
            offsets.push_back(static_cast<int64_t>(tokens.size()));
        }

    ExecutorOptions execOptions = params.executor;
    execOptions.hiddenSampleTokens
        = chooseSampleTokens(static_cast<int64_t>(tokens.size()), params.hiddenSamplesPerLayer, params.packing.seed);
    AtlasPrefetchInfo prefetchInfo;
    if (!prefetch.predictors.empty()) {
        for (const Predictor p : prefetch.predictors)
            prefetchInfo.predictors.push_back(predictorName(p));
        prefetchInfo.maxLookahead = prefetch.maxLookahead;
        prefetchInfo.budget = prefetch.budget;
        prefetchInfo.trainFraction = prefetch.trainFraction;
        prefetchInfo.splitSeed = prefetch.splitSeed.value_or(calib.packing.seed);
        prefetchInfo.trainSequences
            = splitSequences(offsets, domainIds, prefetchInfo.trainFraction, prefetchInfo.splitSeed);
        PrefetchOptions& o = execOptions.prefetch;
        o.predictors = prefetch.predictors;
        o.maxLookahead = prefetch.maxLookahead;
        o.budget = prefetch.budget;
        o.trainTokens.assign(tokens.size(), 0);
        for (std::size_t seq = 0; seq + 1 < offsets.size(); ++seq)
            if (prefetchInfo.trainSequences[seq])
                std::fill(
                    o.trainTokens.begin() + offsets[seq], o.trainTokens.begin() + offsets[seq + 1], uint8_t { 1 });
    }
    Executor executor(ckpt, spec, execOptions); // validates every tensor before any output exists
    executor.checkRunMemory(offsets); // and the memory plan

    AtlasModelInfo model;
    model.checkpointPath = fs::absolute(ckpt.dir()).string();
    model.configJson = readFile(configPath);
    model.configSha256 = sha256Hex(model.configJson);
    model.modelType = spec.modelType;
    model.numLayers = spec.numLayers;
    model.moeLayers = spec.moeLayerIndices();
    model.numExperts = spec.router.numExperts;
    model.topK = spec.router.topK;
    model.hiddenSize = spec.hiddenSize;
    recordRouter(ckpt, spec, model);

    AtlasCalibration calibration;
    for (const PackedDomain& d : calib.domains)
        calibration.domains.push_back({ d.name, d.source, d.format, static_cast<int64_t>(d.sequences.size()),
            static_cast<int64_t>(d.sequences.size()) * calib.packing.seqLen });
    calibration.seqLen = calib.packing.seqLen;
    calibration.seed = calib.packing.seed;
    calibration.packing = calib.describePacking();
    calibration.device = executor.deviceName();
    calibration.computeDtype = execOptions.computeDtype;

    ExecutionStart start;
    std::optional<AtlasFile> atlas;
    const fs::path resumePath = resumeStatePath(params.output);
    if (params.resume) {
        // Refuses a partial atlas of another model or other tokens (resume needs the same
        // --domain, --seq-len, --max-samples and --seed).
        atlas.emplace(AtlasFile::openForResume(params.output, model, tokens));
        if (prefetchInfo.predictors.empty() && !atlas->resultGroups("prefetch").empty())
            throw InputError(atlas->path().string() + ": the interrupted capture recorded expert predictions "
                + "(/prefetch); resume with the same --prefetch options");
        if (fs::exists(resumePath)) {
            const SafetensorsFile state(resumePath);
            const int layer = std::stoi(state.metadata().at("completed_layer"));
            const auto bytes = state.bytes("hidden");
            start.firstLayer = layer + 1;
            start.hidden.resize(bytes.size() / sizeof(float));
            std::memcpy(start.hidden.data(), bytes.data(), bytes.size());
            if (!prefetchInfo.predictors.empty())
                start.prefetch = readPrefetchState(
                    state, execOptions.prefetch.has(Predictor::QuasiHidden), execOptions.prefetch.learned());
        }
    } else {
        AtlasCreateOptions createOptions;
        createOptions.logitStorage = params.logitStorage;
        createOptions.storeExpertNorms = execOptions.recordExpertNorms;
        createOptions.hiddenSampleCount = static_cast<int>(execOptions.hiddenSampleTokens.size());
        std::error_code ec;
        fs::remove(resumePath, ec);
        atlas.emplace(AtlasFile::create(params.output, model, calibration, tokens, domainIds, offsets, createOptions));
    }
    // Allocates /prefetch (a resumed one: checks the options and empties the predictions still to come).
    if (!prefetchInfo.predictors.empty())
        atlas->createPrefetch(prefetchInfo);

    AtlasObserver observer(*atlas, resumePath, spec.hiddenSize, params.saveResumeState);
    observer.skipLayers(atlas->completedLayers());
    CaptureSummary summary;
    summary.tokens = static_cast<int64_t>(tokens.size());
    summary.layersSkipped = start.firstLayer;
    if (start.firstLayer < spec.numLayers) {
        const ExecutionResult r = executor.run(tokens, offsets, observer, start, progress, stop);
        summary.seconds = r.seconds;
        summary.peakLayerBytes = r.peakLayerBytes;
    }
    summary.layersRun = spec.numLayers - start.firstLayer;
    atlas->finalize();
    std::error_code ec;
    fs::remove(resumePath, ec);
    summary.atlas = params.output;
    rusage usage {};
    if (getrusage(RUSAGE_SELF, &usage) == 0)
        summary.peakRssBytes = static_cast<uint64_t>(usage.ru_maxrss) * 1024; // Linux reports KiB
    return summary;
}

} // namespace moeatlas
