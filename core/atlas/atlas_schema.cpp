#include "atlas/atlas_schema.h"

#include "util/error.h"

#include <algorithm>
#include <ctime>
#include <limits>

namespace moeatlas::schema {

std::string isoTimeNow()
{
    const std::time_t now = std::time(nullptr);
    std::tm utc {};
    gmtime_r(&now, &utc);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return text;
}

std::string layerGroupName(int layer)
{
    return std::to_string(layer);
}

void validateCreateArguments(const std::string& finalPath, const AtlasModelInfo& model,
    const AtlasCalibration& calibration, std::span<const int32_t> tokens, std::span<const int16_t> domainIds,
    std::span<const int64_t> seqOffsets, const AtlasCreateOptions& options)
{
    auto fail = [&](const std::string& what) { throw InputError(finalPath + ": " + what); };
    if (model.numLayers <= 0)
        fail("model has no decoder layers (num_layers = " + std::to_string(model.numLayers) + ")");
    if (model.moeLayers.empty())
        fail("model has no MoE layers");
    for (size_t i = 0; i < model.moeLayers.size(); ++i) {
        const int layer = model.moeLayers[i];
        if (layer < 0 || layer >= model.numLayers)
            fail("MoE layer " + std::to_string(layer) + " is outside [0, " + std::to_string(model.numLayers) + ")");
        if (i > 0 && layer <= model.moeLayers[i - 1])
            fail("MoE layers must be strictly increasing");
    }
    if (model.numExperts <= 0)
        fail("num_experts must be positive");
    if (model.topK <= 0 || model.topK > model.numExperts)
        fail("top_k " + std::to_string(model.topK) + " is outside [1, " + std::to_string(model.numExperts) + "]");
    if (model.hiddenSize <= 0)
        fail("hidden_size must be positive");

    const auto numTokens = static_cast<int64_t>(tokens.size());
    if (numTokens == 0)
        fail("no calibration tokens");
    if (domainIds.size() != tokens.size())
        fail("token domain ids have " + std::to_string(domainIds.size()) + " entries, tokens "
            + std::to_string(tokens.size()));
    if (!calibration.domains.empty()) {
        const auto numDomains = static_cast<int64_t>(calibration.domains.size());
        for (int16_t id : domainIds)
            if (id < 0 || id >= numDomains)
                fail("token domain id " + std::to_string(id) + " is outside [0, " + std::to_string(numDomains) + ")");
    }
    if (seqOffsets.size() < 2 || seqOffsets.front() != 0 || seqOffsets.back() != numTokens)
        fail("sequence offsets must start at 0 and end at the token count " + std::to_string(numTokens));
    if (!std::is_sorted(seqOffsets.begin(), seqOffsets.end()))
        fail("sequence offsets must be non-decreasing");

    if (options.compressionLevel < 0 || options.compressionLevel > 9)
        fail("gzip compression level " + std::to_string(options.compressionLevel) + " is outside [0, 9]");
    if (options.hiddenSampleCount < 0 || options.hiddenSampleCount > numTokens)
        fail("hidden sample count " + std::to_string(options.hiddenSampleCount) + " is outside [0, "
            + std::to_string(numTokens) + "]");
}

void writeRootAttributes(hid_t file)
{
    h5::writeAttribute(file, "format", kFormat);
    h5::writeAttribute(file, "schema_version", int64_t { kAtlasSchemaVersion });
    h5::writeAttribute(file, "created", isoTimeNow());
    h5::writeAttribute(file, "complete", int64_t { 0 });
    h5::writeAttribute(file, "producer", kProducer);
}

void checkRootAttributes(hid_t file)
{
    const std::string name = h5::fileName(file);
    if (!h5::hasAttribute(file, "format") || h5::readStringAttribute(file, "format") != kFormat)
        throw InputError(name + ": not a MoE Atlas file (root attribute format is not \"" + kFormat + "\")");
    const int64_t version = h5::readInt64Attribute(file, "schema_version");
    if (version > kAtlasSchemaVersion)
        throw InputError(name + ": atlas schema version " + std::to_string(version)
            + " is newer than this build reads (" + std::to_string(kAtlasSchemaVersion) + "); update moeatlas");
    if (version < 1)
        throw InputError(name + ": invalid atlas schema version " + std::to_string(version));
}

namespace {

int readIntAttribute(hid_t object, const std::string& name)
{
    const int64_t value = h5::readInt64Attribute(object, name);
    if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max())
        h5::failRead(object, "", "attribute '" + name + "' is out of range");
    return static_cast<int>(value);
}

template <typename T> void writeVector(hid_t location, const std::string& name, hid_t fileType, const std::vector<T>& v)
{
    h5::Dataset dataset = h5::createDataset(location, name, fileType, { v.size() });
    if (!v.empty())
        h5::writeAll(dataset.id(), h5::nativeType<T>(), v.data());
}

} // namespace

void writeModel(hid_t file, const AtlasModelInfo& model)
{
    h5::Group group = h5::createGroup(file, "model");
    const hid_t g = group.id();
    h5::writeAttribute(g, "checkpoint_path", model.checkpointPath);
    h5::writeAttribute(g, "config_sha256", model.configSha256);
    h5::writeAttribute(g, "model_type", model.modelType);
    h5::writeAttribute(g, "num_layers", int64_t { model.numLayers });
    h5::writeAttribute(g, "num_experts", int64_t { model.numExperts });
    h5::writeAttribute(g, "top_k", int64_t { model.topK });
    h5::writeAttribute(g, "hidden_size", model.hiddenSize);
    std::vector<int32_t> moeLayers(model.moeLayers.begin(), model.moeLayers.end());
    writeVector(g, "moe_layers", H5T_STD_I32LE, moeLayers);
    // A dataset rather than an attribute: config.json may outgrow an object header.
    h5::writeScalarString(g, "config_json", model.configJson);
    h5::writeAttribute(g, "router", model.router);
    if (model.router == "sigmoid") {
        h5::writeAttribute(g, "router_n_group", int64_t { model.routerGroups });
        h5::writeAttribute(g, "router_topk_group", int64_t { model.routerTopkGroup });
        h5::writeAttribute(g, "router_norm_topk_prob", int64_t { model.routerNormTopkProb ? 1 : 0 });
        h5::writeAttribute(g, "router_scaling_factor", model.routerScalingFactor);
    }
    if (!model.correctionBias.empty()) {
        std::vector<float> flat;
        for (const std::vector<float>& row : model.correctionBias)
            flat.insert(flat.end(), row.begin(), row.end());
        h5::Dataset bias = h5::createDataset(g, "router_correction_bias", H5T_IEEE_F32LE,
            { model.correctionBias.size(), static_cast<std::size_t>(model.numExperts) });
        h5::writeAll(bias.id(), h5::nativeType<float>(), flat.data());
    }
}

AtlasModelInfo readModel(hid_t file)
{
    h5::Group group = h5::openGroup(file, "model");
    const hid_t g = group.id();
    AtlasModelInfo model;
    model.checkpointPath = h5::readStringAttribute(g, "checkpoint_path");
    model.configSha256 = h5::readStringAttribute(g, "config_sha256");
    model.modelType = h5::readStringAttribute(g, "model_type");
    model.numLayers = readIntAttribute(g, "num_layers");
    model.numExperts = readIntAttribute(g, "num_experts");
    model.topK = readIntAttribute(g, "top_k");
    model.hiddenSize = h5::readInt64Attribute(g, "hidden_size");
    h5::Dataset moeLayers = h5::openDataset(g, "moe_layers");
    for (int32_t layer : h5::readVector<int32_t>(moeLayers.id()))
        model.moeLayers.push_back(layer);
    model.configJson = h5::readScalarString(g, "config_json");
    // Optional (atlases written before the sigmoid router): softmax.
    if (h5::hasAttribute(g, "router"))
        model.router = h5::readStringAttribute(g, "router");
    if (model.router != "softmax" && model.router != "sigmoid")
        h5::failRead(g, "router", "is '" + model.router + "' (expected softmax or sigmoid)");
    if (model.router == "sigmoid") {
        model.routerGroups = readIntAttribute(g, "router_n_group");
        model.routerTopkGroup = readIntAttribute(g, "router_topk_group");
        model.routerNormTopkProb = readIntAttribute(g, "router_norm_topk_prob") != 0;
        model.routerScalingFactor = h5::readDoubleAttribute(g, "router_scaling_factor");
    }
    if (h5::exists(g, "router_correction_bias")) {
        h5::Dataset bias = h5::openDataset(g, "router_correction_bias");
        const std::vector<float> flat = h5::readVector<float>(bias.id());
        const std::size_t E = model.numExperts > 0 ? static_cast<std::size_t>(model.numExperts) : 1;
        if (flat.size() != model.moeLayers.size() * E)
            h5::failRead(g, "router_correction_bias",
                "holds " + std::to_string(flat.size()) + " values, expected moe_layers x num_experts");
        for (std::size_t i = 0; i < model.moeLayers.size(); ++i)
            model.correctionBias.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(i * E),
                flat.begin() + static_cast<std::ptrdiff_t>((i + 1) * E));
    }
    if (model.moeLayers.empty() || model.numExperts <= 0 || model.topK <= 0 || model.topK > model.numExperts)
        h5::failRead(g, "", "inconsistent model description (moe_layers, num_experts, top_k)");
    return model;
}

void writeCalibration(hid_t file, const AtlasCalibration& calibration)
{
    h5::Group group = h5::createGroup(file, "calibration");
    const hid_t g = group.id();
    h5::writeAttribute(g, "seq_len", calibration.seqLen);
    h5::writeAttribute(g, "seed", calibration.seed);
    h5::writeAttribute(g, "packing", calibration.packing);
    h5::writeAttribute(g, "device", calibration.device);
    h5::writeAttribute(g, "compute_dtype", calibration.computeDtype);

    h5::Group domains = h5::createGroup(g, "domains");
    std::vector<std::string> names, sources, formats;
    std::vector<int64_t> samples, tokens;
    for (const AtlasDomain& d : calibration.domains) {
        names.push_back(d.name);
        sources.push_back(d.source);
        formats.push_back(d.format);
        samples.push_back(d.numSamples);
        tokens.push_back(d.numTokens);
    }
    h5::writeStrings(domains.id(), "name", names);
    h5::writeStrings(domains.id(), "source", sources);
    h5::writeStrings(domains.id(), "format", formats);
    writeVector(domains.id(), "num_samples", H5T_STD_I64LE, samples);
    writeVector(domains.id(), "num_tokens", H5T_STD_I64LE, tokens);
}

AtlasCalibration readCalibration(hid_t file)
{
    h5::Group group = h5::openGroup(file, "calibration");
    const hid_t g = group.id();
    AtlasCalibration calibration;
    calibration.seqLen = h5::readInt64Attribute(g, "seq_len");
    calibration.seed = h5::readUInt64Attribute(g, "seed");
    calibration.packing = h5::readStringAttribute(g, "packing");
    calibration.device = h5::readStringAttribute(g, "device");
    calibration.computeDtype = h5::readStringAttribute(g, "compute_dtype");

    h5::Group domains = h5::openGroup(g, "domains");
    const hid_t d = domains.id();
    const std::vector<std::string> names = h5::readStrings(h5::openDataset(d, "name").id());
    const auto count = static_cast<int64_t>(names.size());
    const std::vector<std::string> sources = h5::readStrings(h5::openDataset(d, "source").id());
    const std::vector<std::string> formats = h5::readStrings(h5::openDataset(d, "format").id());
    const auto samples = h5::readVector<int64_t>(h5::openDataset(d, "num_samples").id(), count);
    const auto tokens = h5::readVector<int64_t>(h5::openDataset(d, "num_tokens").id(), count);
    if (sources.size() != names.size() || formats.size() != names.size())
        h5::failRead(d, "", "domain datasets differ in length");
    for (size_t i = 0; i < names.size(); ++i)
        calibration.domains.push_back({ names[i], sources[i], formats[i], samples[i], tokens[i] });
    return calibration;
}

void writeTokens(hid_t file, std::span<const int32_t> tokens, std::span<const int16_t> domainIds,
    std::span<const int64_t> seqOffsets, int compressionLevel)
{
    h5::Group group = h5::createGroup(file, "tokens");
    const hsize_t count = tokens.size();
    const h5::Layout layout { { std::min(count, kTokenChunk) }, compressionLevel, true };
    h5::Dataset ids = h5::createDataset(group.id(), "ids", H5T_STD_I32LE, { count }, layout);
    h5::writeAll(ids.id(), H5T_NATIVE_INT32, tokens.data());
    h5::Dataset domain = h5::createDataset(group.id(), "domain", H5T_STD_I16LE, { count }, layout);
    h5::writeAll(domain.id(), H5T_NATIVE_INT16, domainIds.data());
    h5::Dataset offsets = h5::createDataset(group.id(), "seq_offsets", H5T_STD_I64LE, { seqOffsets.size() });
    h5::writeAll(offsets.id(), H5T_NATIVE_INT64, seqOffsets.data());
}

void writeOptions(hid_t layersGroup, const AtlasCreateOptions& options)
{
    h5::writeAttribute(
        layersGroup, "logit_storage", options.logitStorage == LogitStorage::Float16 ? "float16" : "float32");
    h5::writeAttribute(layersGroup, "store_expert_norms", int64_t { options.storeExpertNorms });
    h5::writeAttribute(layersGroup, "hidden_sample_count", int64_t { options.hiddenSampleCount });
    h5::writeAttribute(layersGroup, "compression_level", int64_t { options.compressionLevel });
}

AtlasCreateOptions readOptions(hid_t layersGroup)
{
    AtlasCreateOptions options;
    const std::string storage = h5::readStringAttribute(layersGroup, "logit_storage");
    if (storage == "float16")
        options.logitStorage = LogitStorage::Float16;
    else if (storage == "float32")
        options.logitStorage = LogitStorage::Float32;
    else
        h5::failRead(layersGroup, "", "logit_storage \"" + storage + "\" is neither \"float16\" nor \"float32\"");
    options.storeExpertNorms = readIntAttribute(layersGroup, "store_expert_norms") != 0;
    options.hiddenSampleCount = readIntAttribute(layersGroup, "hidden_sample_count");
    options.compressionLevel = readIntAttribute(layersGroup, "compression_level");
    return options;
}

void createLayer(
    hid_t layersGroup, int layer, int64_t numTokens, const AtlasModelInfo& model, const AtlasCreateOptions& options)
{
    h5::Group group = h5::createGroup(layersGroup, layerGroupName(layer));
    const hid_t g = group.id();
    const auto rows = static_cast<hsize_t>(numTokens);
    const auto experts = static_cast<hsize_t>(model.numExperts);
    const auto k = static_cast<hsize_t>(model.topK);
    const hsize_t chunkRows = std::min(rows, kChunkTokens);
    const int gzip = options.compressionLevel;

    h5::Datatype half = h5::halfType();
    const hid_t logitType = options.logitStorage == LogitStorage::Float16 ? half.id() : H5T_IEEE_F32LE;
    h5::createDataset(g, "router_logits", logitType, { rows, experts }, { { chunkRows, experts }, gzip, true });
    // int16 halves the size of the ids whenever the expert count allows it.
    const hid_t idType = model.numExperts <= std::numeric_limits<int16_t>::max() ? H5T_STD_I16LE : H5T_STD_I32LE;
    h5::createDataset(g, "topk_ids", idType, { rows, k }, { { chunkRows, k }, gzip, true });
    h5::createDataset(g, "topk_weights", H5T_IEEE_F32LE, { rows, k }, { { chunkRows, k }, gzip, true });
    if (options.storeExpertNorms)
        h5::createDataset(g, "expert_norms", H5T_IEEE_F32LE, { rows, k }, { { chunkRows, k }, gzip, true });
    h5::writeAttribute(g, "complete", int64_t { 0 });
}

} // namespace moeatlas::schema
