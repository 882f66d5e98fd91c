#include "atlas/atlas_file.h"

#include "atlas/atlas_state.h"

namespace fs = std::filesystem;

namespace moeatlas {

using atlas_internal::AtlasState;
using atlas_internal::checked;
using atlas_internal::joinInts;
using atlas_internal::LayerHandles;
using atlas_internal::loadExisting;
using atlas_internal::Lock;

AtlasFile::AtlasFile(std::unique_ptr<Impl> impl)
    : m_impl(std::move(impl))
{
}
AtlasFile::AtlasFile(AtlasFile&&) noexcept = default;
AtlasFile& AtlasFile::operator=(AtlasFile&& other) noexcept
{
    if (this != &other) {
        Lock lock(h5::libraryMutex());
        m_impl = std::move(other.m_impl);
    }
    return *this;
}

AtlasFile::~AtlasFile()
{
    if (!m_impl)
        return;
    // Without finalize() the .partial file stays behind, closed cleanly, ready for resume. An
    // update never committed leaves the atlas untouched: its file is removed and its lock
    // released as the members end (AtlasState).
    Lock lock(h5::libraryMutex());
    m_impl->close();
    m_impl.reset();
}

// ---- create / open -------------------------------------------------------------------------

AtlasFile AtlasFile::create(const fs::path& finalPath, const AtlasModelInfo& model, const AtlasCalibration& calibration,
    std::span<const int32_t> tokens, std::span<const int16_t> domainIds, std::span<const int64_t> seqOffsets,
    const AtlasCreateOptions& options)
{
    schema::validateCreateArguments(finalPath.string(), model, calibration, tokens, domainIds, seqOffsets, options);
    ensureWritableDirectory(finalPath);

    Lock lock(h5::libraryMutex());
    auto impl = std::make_unique<Impl>();
    impl->path = partialPathFor(finalPath);
    impl->finalPath = finalPath;
    impl->writable = true;
    impl->model = model;
    impl->calibration = calibration;
    impl->options = options;
    impl->numTokens = static_cast<int64_t>(tokens.size());
    impl->layerComplete.assign(model.moeLayers.size(), 0);

    try {
        impl->file = h5::createFile(impl->path);
        const hid_t f = impl->file.id();
        schema::writeRootAttributes(f);
        schema::writeModel(f, model);
        schema::writeCalibration(f, calibration);
        schema::writeTokens(f, tokens, domainIds, seqOffsets, options.compressionLevel);
        impl->layersGroup = h5::createGroup(f, "layers");
        schema::writeOptions(impl->layersGroup.id(), options);
        for (int layer : model.moeLayers)
            schema::createLayer(impl->layersGroup.id(), layer, impl->numTokens, model, options);
        h5::Group progress = h5::createGroup(f, "progress");
        h5::Dataset flags
            = h5::createDataset(progress.id(), "layers_complete", H5T_STD_I32LE, { impl->layerComplete.size() });
        h5::writeAll(flags.id(), H5T_NATIVE_INT32, impl->layerComplete.data());
        // From here on an interruption leaves a valid, resumable file.
        h5::flushFile(f, true);
    } catch (...) {
        // A half-created file is of no use to a resume; do not leave it behind.
        impl->close();
        std::error_code ec;
        fs::remove(impl->path, ec);
        throw;
    }
    return AtlasFile(std::move(impl));
}

namespace atlas_internal {

void loadExisting(AtlasState* impl, const fs::path& path, bool writable)
{
    impl->path = path;
    impl->writable = writable;
    impl->file = h5::openFile(path, writable);
    const hid_t f = impl->file.id();
    schema::checkRootAttributes(f);
    impl->complete = h5::readInt64Attribute(f, "complete") != 0;
    impl->model = schema::readModel(f);
    impl->calibration = schema::readCalibration(f);
    impl->layersGroup = h5::openGroup(f, "layers");
    impl->options = schema::readOptions(impl->layersGroup.id());
    impl->idsOnly = h5::hasAttribute(impl->layersGroup.id(), "ids_only")
        && h5::readInt64Attribute(impl->layersGroup.id(), "ids_only") != 0;

    h5::Group tokens = h5::openGroup(f, "tokens");
    h5::Dataset ids = h5::openDataset(tokens.id(), "ids");
    const std::vector<hsize_t> dims = h5::shape(ids.id());
    if (dims.size() != 1)
        h5::failRead(ids.id(), "", "is not one-dimensional");
    impl->numTokens = static_cast<int64_t>(dims[0]);
    h5::Dataset domain = h5::openDataset(tokens.id(), "domain");
    if (h5::shape(domain.id()) != dims)
        h5::failRead(domain.id(), "", "length differs from /tokens/ids");

    h5::Dataset progress = h5::openDataset(f, "progress/layers_complete");
    impl->layerComplete = h5::readVector<int32_t>(progress.id(), static_cast<int64_t>(impl->model.moeLayers.size()));
}

} // namespace atlas_internal

AtlasFile AtlasFile::openForResume(const fs::path& finalPath)
{
    const fs::path partial = partialPathFor(finalPath);
    std::error_code ec;
    if (!fs::exists(partial, ec)) {
        std::string message = partial.string() + ": no partial atlas to resume";
        if (fs::exists(finalPath, ec))
            message += " (" + finalPath.string() + " exists and is already complete)";
        throw InputError(message);
    }
    ensureWritableDirectory(finalPath);
    Lock lock(h5::libraryMutex());
    auto impl = std::make_unique<Impl>();
    loadExisting(impl.get(), partial, true);
    impl->finalPath = finalPath;
    // Layers not marked complete may have been cut off mid-write, even mid-way through HDF5
    // updating their chunk index; recreate them so the resumed capture writes into clean
    // datasets. (Their old space stays allocated: at most one layer per interruption.)
    const hid_t layersGroup = impl->layersGroup.id();
    for (size_t i = 0; i < impl->model.moeLayers.size(); ++i) {
        if (impl->layerComplete[i] != 0)
            continue;
        const int layer = impl->model.moeLayers[i];
        const std::string name = schema::layerGroupName(layer);
        if (h5::exists(layersGroup, name))
            h5::unlink(layersGroup, name);
        schema::createLayer(layersGroup, layer, impl->numTokens, impl->model, impl->options);
    }
    h5::flushFile(impl->file.id(), true);
    return AtlasFile(std::move(impl));
}

AtlasFile AtlasFile::openForResume(
    const fs::path& finalPath, const AtlasModelInfo& expectedModel, std::span<const int32_t> expectedTokens)
{
    AtlasFile atlas = openForResume(finalPath);
    const AtlasModelInfo& model = atlas.model();
    const std::string name = atlas.path().string();
    auto mismatch = [&](const std::string& what) {
        throw InputError(
            name + ": cannot resume, the partial atlas was made from " + what + "; delete it to start over");
    };
    if (model.configSha256 != expectedModel.configSha256)
        mismatch("a different model (config_sha256 " + model.configSha256 + ", expected " + expectedModel.configSha256
            + ")");
    if (model.moeLayers != expectedModel.moeLayers || model.numExperts != expectedModel.numExperts
        || model.topK != expectedModel.topK)
        mismatch("a model with different MoE layers, expert count or top-k");
    const std::vector<int32_t> tokens = atlas.tokens();
    if (!std::equal(tokens.begin(), tokens.end(), expectedTokens.begin(), expectedTokens.end()))
        mismatch("different calibration tokens (" + std::to_string(tokens.size()) + " tokens stored, "
            + std::to_string(expectedTokens.size()) + " given)");
    return atlas;
}

AtlasFile AtlasFile::openReadOnly(const fs::path& path)
{
    Lock lock(h5::libraryMutex());
    auto impl = std::make_unique<Impl>();
    loadExisting(impl.get(), path, false);
    return AtlasFile(std::move(impl));
}

// ---- metadata ------------------------------------------------------------------------------

const fs::path& AtlasFile::path() const
{
    return checked(m_impl).path;
}
bool AtlasFile::isComplete() const
{
    return checked(m_impl).complete;
}
const AtlasModelInfo& AtlasFile::model() const
{
    return checked(m_impl).model;
}
const AtlasCalibration& AtlasFile::calibration() const
{
    return checked(m_impl).calibration;
}
const AtlasCreateOptions& AtlasFile::options() const
{
    return checked(m_impl).options;
}
int64_t AtlasFile::numTokens() const
{
    return checked(m_impl).numTokens;
}

std::vector<int32_t> AtlasFile::tokens() const
{
    Lock lock(h5::libraryMutex());
    checked(m_impl).requireOpen();
    h5::Dataset d = h5::openDataset(m_impl->file.id(), "tokens/ids");
    return h5::readVector<int32_t>(d.id(), m_impl->numTokens);
}

std::vector<int16_t> AtlasFile::domainIds() const
{
    Lock lock(h5::libraryMutex());
    checked(m_impl).requireOpen();
    h5::Dataset d = h5::openDataset(m_impl->file.id(), "tokens/domain");
    return h5::readVector<int16_t>(d.id(), m_impl->numTokens);
}

std::vector<int64_t> AtlasFile::seqOffsets() const
{
    Lock lock(h5::libraryMutex());
    checked(m_impl).requireOpen();
    h5::Dataset d = h5::openDataset(m_impl->file.id(), "tokens/seq_offsets");
    return h5::readVector<int64_t>(d.id());
}

std::vector<int> AtlasFile::completedLayers() const
{
    const AtlasState& impl = checked(m_impl);
    std::vector<int> done;
    for (size_t i = 0; i < impl.model.moeLayers.size(); ++i)
        if (impl.layerComplete[i] != 0)
            done.push_back(impl.model.moeLayers[i]);
    return done;
}

// ---- writing -------------------------------------------------------------------------------

void AtlasFile::writeRouterBlock(const RouterBlock& block)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireCapture();
    const std::string where = impl.path.string() + ": layer " + std::to_string(block.layer) + ": ";
    if (impl.layerComplete[impl.slotOf(block.layer)] != 0)
        throw Error(where + "already marked complete");
    if (block.numExperts != impl.model.numExperts || block.topK != impl.model.topK)
        throw Error(where + "router block has " + std::to_string(block.numExperts) + " experts, top-"
            + std::to_string(block.topK) + "; the atlas has " + std::to_string(impl.model.numExperts) + ", top-"
            + std::to_string(impl.model.topK));
    if (block.tokenBegin < 0 || block.numTokens < 0 || block.tokenBegin > impl.numTokens
        || block.numTokens > impl.numTokens - block.tokenBegin)
        throw Error(where + "tokens [" + std::to_string(block.tokenBegin) + ", "
            + std::to_string(block.tokenBegin + block.numTokens) + ") are outside [0, " + std::to_string(impl.numTokens)
            + ")");
    if (block.numTokens == 0)
        return;
    if (block.logits == nullptr || block.topkIds == nullptr || block.topkWeights == nullptr
        || (impl.options.storeExpertNorms && block.expertNorms == nullptr))
        throw Error(where + "router block is missing logits, top-k ids, weights or expert norms");

    const auto experts = static_cast<size_t>(impl.model.numExperts);
    const auto k = static_cast<size_t>(impl.model.topK);
    const auto rows = static_cast<size_t>(block.numTokens);
    for (size_t i = 0; i < rows * k; ++i)
        if (block.topkIds[i] < 0 || static_cast<size_t>(block.topkIds[i]) >= experts)
            throw Error(where + "top-k expert id " + std::to_string(block.topkIds[i]) + " is outside [0, "
                + std::to_string(experts) + ")");

    LayerHandles& layer = impl.openLayer(block.layer);
    const auto begin = static_cast<hsize_t>(block.tokenBegin);
    if (impl.options.logitStorage == LogitStorage::Float16) {
        std::vector<uint16_t> half(rows * experts);
        std::transform(block.logits, block.logits + half.size(), half.begin(), floatToHalf);
        const h5::Datatype halfType = h5::halfType();
        h5::writeRows(layer.logits.id(), halfType.id(), begin, rows, half.data());
    } else {
        h5::writeRows(layer.logits.id(), H5T_NATIVE_FLOAT, begin, rows, block.logits);
    }
    h5::writeRows(layer.topkIds.id(), H5T_NATIVE_INT32, begin, rows, block.topkIds);
    h5::writeRows(layer.topkWeights.id(), H5T_NATIVE_FLOAT, begin, rows, block.topkWeights);
    if (layer.expertNorms)
        h5::writeRows(layer.expertNorms.id(), H5T_NATIVE_FLOAT, begin, rows, block.expertNorms);
}

void AtlasFile::writeHiddenSamples(int layer, std::span<const int64_t> tokenIndices, std::span<const float> values)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireCapture();
    const std::string where = impl.path.string() + ": layer " + std::to_string(layer) + ": ";
    if (impl.layerComplete[impl.slotOf(layer)] != 0)
        throw Error(where + "already marked complete");
    const auto hidden = static_cast<size_t>(impl.model.hiddenSize);
    if (values.size() != tokenIndices.size() * hidden)
        throw Error(where + "hidden samples have " + std::to_string(values.size()) + " values for "
            + std::to_string(tokenIndices.size()) + " tokens of " + std::to_string(hidden));
    for (int64_t index : tokenIndices)
        if (index < 0 || index >= impl.numTokens)
            throw Error(where + "hidden sample token index " + std::to_string(index) + " is outside [0, "
                + std::to_string(impl.numTokens) + ")");

    LayerHandles& handles = impl.openLayer(layer);
    if (h5::exists(handles.group.id(), "hidden_samples"))
        h5::unlink(handles.group.id(), "hidden_samples");
    h5::Group group = h5::createGroup(handles.group.id(), "hidden_samples");
    const hsize_t n = tokenIndices.size();
    h5::Dataset index = h5::createDataset(group.id(), "token_index", H5T_STD_I64LE, { n });
    h5::Dataset data = h5::createDataset(group.id(), "values", H5T_IEEE_F32LE, { n, hidden });
    if (n > 0) {
        h5::writeAll(index.id(), H5T_NATIVE_INT64, tokenIndices.data());
        h5::writeAll(data.id(), H5T_NATIVE_FLOAT, values.data());
    }
}

void AtlasFile::markLayerComplete(int layer)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireCapture();
    const size_t slot = impl.slotOf(layer);
    LayerHandles& handles = impl.openLayer(layer);
    h5::writeAttribute(handles.group.id(), "complete", int64_t { 1 });
    impl.layerComplete[slot] = 1;
    impl.writeProgress();
    // The flush is what makes "complete" true on disk: records written before it are durable.
    h5::flushFile(impl.file.id(), true);
}

void AtlasFile::finalize()
{
    AtlasState& impl = checked(m_impl);
    {
        Lock lock(h5::libraryMutex());
        impl.requireCapture();
        std::vector<int> missing;
        for (size_t i = 0; i < impl.model.moeLayers.size(); ++i)
            if (impl.layerComplete[i] == 0)
                missing.push_back(impl.model.moeLayers[i]);
        if (!missing.empty())
            throw Error(impl.path.string() + ": cannot finalize, MoE layers not complete: " + joinInts(missing));
    }
    // An update of an older atlas under this name must not commit over the new capture: wait for
    // its turn before anything changes (a timeout leaves the .partial file as it was, resumable),
    // without the HDF5 lock so other atlases of this process go on meanwhile.
    const FileLock turn
        = FileLock::acquire(lockPathFor(impl.finalPath), LockWait {}, "an update of " + impl.finalPath.string());
    Lock lock(h5::libraryMutex());
    h5::writeAttribute(impl.file.id(), "complete", int64_t { 1 });
    h5::flushFile(impl.file.id(), true);
    if (!impl.close()) {
        const std::string detail = h5::takeErrorDetail();
        throw Error(impl.path.string() + ": closing the atlas failed"
            + (detail.empty() ? std::string() : " (HDF5: " + detail + ")"));
    }
    commitFile(impl.path, impl.finalPath);
    impl.path = impl.finalPath;
    impl.writable = false;
    impl.complete = true;
}

// ---- reading -------------------------------------------------------------------------------

std::vector<float> AtlasFile::readLogits(int layer) const
{
    return readLogits(layer, 0, checked(m_impl).numTokens);
}

std::vector<float> AtlasFile::readLogits(int layer, int64_t tokenBegin, int64_t numTokens) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    impl.requireLogits(layer);
    LayerHandles& handles = impl.openLayer(layer);
    return impl.readFloatRows(handles.logits.id(), impl.options.logitStorage == LogitStorage::Float16, tokenBegin,
        numTokens, impl.model.numExperts);
}

std::vector<int32_t> AtlasFile::readTopkIds(int layer) const
{
    Lock lock(h5::libraryMutex());
    checked(m_impl).requireOpen();
    LayerHandles& handles = m_impl->openLayer(layer);
    return h5::readVector<int32_t>(handles.topkIds.id());
}

std::vector<float> AtlasFile::readTopkWeights(int layer) const
{
    Lock lock(h5::libraryMutex());
    checked(m_impl).requireOpen();
    m_impl->requireLogits(layer);
    LayerHandles& handles = m_impl->openLayer(layer);
    return h5::readVector<float>(handles.topkWeights.id());
}

std::vector<float> AtlasFile::readExpertNorms(int layer) const
{
    Lock lock(h5::libraryMutex());
    checked(m_impl).requireOpen();
    LayerHandles& handles = m_impl->openLayer(layer);
    if (!handles.expertNorms)
        return {};
    return h5::readVector<float>(handles.expertNorms.id());
}

AtlasHiddenSamples AtlasFile::readHiddenSamples(int layer) const
{
    Lock lock(h5::libraryMutex());
    checked(m_impl).requireOpen();
    LayerHandles& handles = m_impl->openLayer(layer);
    AtlasHiddenSamples samples;
    if (!h5::exists(handles.group.id(), "hidden_samples"))
        return samples;
    h5::Group group = h5::openGroup(handles.group.id(), "hidden_samples");
    h5::Dataset index = h5::openDataset(group.id(), "token_index");
    samples.tokenIndices = h5::readVector<int64_t>(index.id());
    h5::Dataset values = h5::openDataset(group.id(), "values");
    samples.values = h5::readVector<float>(
        values.id(), static_cast<int64_t>(samples.tokenIndices.size()) * m_impl->model.hiddenSize);
    return samples;
}

std::vector<int32_t> AtlasFile::readTopkIds(int layer, int64_t tokenBegin, int64_t numTokens) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    LayerHandles& handles = impl.openLayer(layer);
    if (tokenBegin < 0 || numTokens < 0 || tokenBegin > impl.numTokens || numTokens > impl.numTokens - tokenBegin)
        throw InputError(impl.path.string() + ": token range [" + std::to_string(tokenBegin) + ", "
            + std::to_string(tokenBegin + numTokens) + ") is outside [0, " + std::to_string(impl.numTokens) + ")");
    std::vector<int32_t> ids(static_cast<size_t>(numTokens * impl.model.topK));
    if (!ids.empty())
        h5::readRows(handles.topkIds.id(), H5T_NATIVE_INT32, static_cast<hsize_t>(tokenBegin),
            static_cast<hsize_t>(numTokens), ids.data());
    return ids;
}

std::vector<float> AtlasFile::readTopkWeights(int layer, int64_t tokenBegin, int64_t numTokens) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    impl.requireLogits(layer);
    LayerHandles& handles = impl.openLayer(layer);
    return impl.readFloatRows(handles.topkWeights.id(), false, tokenBegin, numTokens, impl.model.topK);
}

std::vector<float> AtlasFile::readExpertNorms(int layer, int64_t tokenBegin, int64_t numTokens) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    LayerHandles& handles = impl.openLayer(layer);
    if (!handles.expertNorms)
        return {};
    return impl.readFloatRows(handles.expertNorms.id(), false, tokenBegin, numTokens, impl.model.topK);
}

} // namespace moeatlas
