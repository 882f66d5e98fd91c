#include "metrics/merge.h"

#include "atlas/atlas_file.h"
#include "util/atomic_file.h"
#include "util/error.h"

#include <algorithm>
#include <filesystem>

namespace moeatlas {

MergeReport mergeAtlases(const std::vector<std::filesystem::path>& inputs, const std::filesystem::path& output,
    const ProgressFn& progress, const StopToken* stop)
{
    if (inputs.size() < 2)
        throw InputError("merge needs at least two atlases");
    std::vector<AtlasFile> atlases;
    for (const auto& path : inputs) {
        atlases.push_back(AtlasFile::openReadOnly(path));
        if (!atlases.back().isComplete())
            throw InputError(path.string()
                + ": the atlas is not complete; finish the capture "
                  "before merging");
    }
    const AtlasFile& first = atlases.front();
    const AtlasModelInfo& model = first.model();
    const AtlasCreateOptions options = first.options();
    for (size_t i = 1; i < atlases.size(); ++i) {
        const AtlasModelInfo& m = atlases[i].model();
        const std::string pair = inputs[i].string() + " and " + inputs[0].string();
        if (m.configSha256 != model.configSha256)
            throw InputError("cannot merge " + pair
                + ": they were recorded from different "
                  "models (config_sha256 "
                + m.configSha256 + " vs " + model.configSha256 + ")");
        if (m.moeLayers != model.moeLayers || m.numExperts != model.numExperts || m.topK != model.topK)
            throw InputError("cannot merge " + pair + ": MoE layers, expert count or top-k differ");
        const AtlasCreateOptions& o = atlases[i].options();
        if (o.logitStorage != options.logitStorage || o.storeExpertNorms != options.storeExpertNorms)
            throw InputError("cannot merge " + pair
                + ": logit dtype or expert-norm recording "
                  "differ (record both the same way)");
    }

    // Domains by name, in first-seen order; ids of each input remapped.
    AtlasCalibration calibration = first.calibration();
    calibration.domains.clear();
    std::vector<int32_t> tokens;
    std::vector<int16_t> domainIds;
    std::vector<int64_t> offsets { 0 };
    for (const AtlasFile& a : atlases) {
        std::vector<int16_t> remap;
        for (const AtlasDomain& d : a.calibration().domains) {
            auto it = std::find_if(calibration.domains.begin(), calibration.domains.end(),
                [&](const AtlasDomain& x) { return x.name == d.name; });
            if (it == calibration.domains.end()) {
                calibration.domains.push_back(d);
                it = calibration.domains.end() - 1;
            } else {
                it->numSamples += d.numSamples;
                it->numTokens += d.numTokens;
                if (it->source != d.source)
                    it->source += "; " + d.source;
            }
            remap.push_back(static_cast<int16_t>(it - calibration.domains.begin()));
        }
        const int64_t base = static_cast<int64_t>(tokens.size());
        const std::vector<int32_t> t = a.tokens();
        tokens.insert(tokens.end(), t.begin(), t.end());
        for (int16_t d : a.domainIds())
            domainIds.push_back(remap[static_cast<size_t>(d)]);
        const std::vector<int64_t> o = a.seqOffsets();
        for (size_t q = 1; q < o.size(); ++q)
            offsets.push_back(base + o[q]);
        if (a.calibration().packing != calibration.packing
            && calibration.packing.find(a.calibration().packing) == std::string::npos)
            calibration.packing += "; " + a.calibration().packing;
    }
    if (calibration.domains.size() > 32767)
        throw InputError("merged atlas would have more than 32767 domains");

    AtlasFile out = AtlasFile::create(output, model, calibration, tokens, domainIds, offsets, options);
    // A merge cannot be resumed: on any error (a full disk, a damaged input, Ctrl-C) its .partial
    // file goes too, so nothing half-written stays behind (docs/decisions.md, decision 50).
    struct RemovePartial {
        std::filesystem::path path;
        bool armed = true;
        ~RemovePartial()
        {
            std::error_code ec;
            if (armed)
                std::filesystem::remove(path, ec);
        }
    } cleanup { partialPathFor(output) };
    const int64_t total = static_cast<int64_t>(tokens.size()) * static_cast<int64_t>(model.moeLayers.size());
    int64_t done = 0;
    constexpr int64_t kBlock = 4096;
    for (int layer : model.moeLayers) {
        int64_t base = 0;
        for (const AtlasFile& a : atlases) {
            for (int64_t b = 0; b < a.numTokens(); b += kBlock) {
                const int64_t n = std::min(kBlock, a.numTokens() - b);
                const std::vector<float> logits = a.readLogits(layer, b, n);
                const std::vector<int32_t> ids = a.readTopkIds(layer, b, n);
                const std::vector<float> weights = a.readTopkWeights(layer, b, n);
                const std::vector<float> norms = a.readExpertNorms(layer, b, n);
                RouterBlock block;
                block.layer = layer;
                block.tokenBegin = base + b;
                block.numTokens = n;
                block.numExperts = model.numExperts;
                block.topK = model.topK;
                block.logits = logits.data();
                block.topkIds = ids.data();
                block.topkWeights = weights.data();
                block.expertNorms = norms.empty() ? nullptr : norms.data();
                out.writeRouterBlock(block);
                done += n;
                if ((stop != nullptr && stop->stopRequested())
                    || (progress && !progress(Progress { "merging", done, total })))
                    throw Cancelled();
            }
            base += a.numTokens();
        }
        out.markLayerComplete(layer);
    }
    out.finalize();
    cleanup.armed = false;
    return { static_cast<int64_t>(tokens.size()), static_cast<int>(calibration.domains.size()) };
}

} // namespace moeatlas
