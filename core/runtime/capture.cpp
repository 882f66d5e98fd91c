#include "runtime/capture.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_config.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/safetensors_writer.h"
#include "text/tokenizer.h"
#include "util/atomic_file.h"
#include "util/error.h"
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

// Writes routing records into the atlas and, after each layer, the resume state.
class AtlasObserver : public ExecutionObserver {
public:
    AtlasObserver(AtlasFile& atlas, fs::path resumePath, int64_t hiddenSize, bool saveResume)
        : m_atlas(atlas)
        , m_resumePath(std::move(resumePath))
        , m_hidden(hiddenSize)
        , m_saveResume(saveResume)
        , m_moeLayers(atlas.model().moeLayers.begin(), atlas.model().moeLayers.end())
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
            w.write("hidden", std::as_bytes(hidden));
            w.finish();
        }
    }

private:
    AtlasFile& m_atlas;
    fs::path m_resumePath;
    int64_t m_hidden;
    bool m_saveResume;
    std::set<int> m_moeLayers;
    std::set<int> m_skip;
    std::map<int, std::pair<std::vector<int64_t>, std::vector<float>>> m_samples;
};

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
        if (fs::exists(resumePath)) {
            const SafetensorsFile state(resumePath);
            const int layer = std::stoi(state.metadata().at("completed_layer"));
            const auto bytes = state.bytes("hidden");
            start.firstLayer = layer + 1;
            start.hidden.resize(bytes.size() / sizeof(float));
            std::memcpy(start.hidden.data(), bytes.data(), bytes.size());
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
