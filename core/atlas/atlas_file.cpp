#include "atlas/atlas_file.h"

#include "atlas/atlas_schema.h"
#include "atlas/h5.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/file_lock.h"
#include "util/half.h"

#include <algorithm>
#include <map>
#include <set>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

using Lock = std::lock_guard<std::recursive_mutex>;

// Open handles of one /layers/<layer> group; opened on first use and kept while the file is.
struct LayerHandles {
    h5::Group group;
    h5::Dataset logits;
    h5::Dataset topkIds;
    h5::Dataset topkWeights;
    h5::Dataset expertNorms; // invalid when not stored
};

std::string joinInts(const std::vector<int>& values)
{
    std::string text;
    for (int v : values)
        text += (text.empty() ? "" : ", ") + std::to_string(v);
    return text;
}

// A file removed when this object ends, unless release()d first.
struct TempFile {
    fs::path path;
    TempFile() = default;
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile()
    {
        if (path.empty())
            return;
        std::error_code ec;
        fs::remove(path, ec);
    }
    void release() { path.clear(); }
};

// Everything behind AtlasFile::Impl; a namespace-level type so helpers here can take it.
struct AtlasState {
    fs::path path; // the file open now (.partial while writing)
    fs::path finalPath; // where finalize() moves it; empty for read-only
    // openForUpdate(): `file` is the atlas, open read-only; result groups go to `staging`, which
    // commitUpdate() completes with the atlas's other objects and renames over `target`.
    bool updating = false;
    bool writable = false;
    bool complete = false; // root attribute "complete"
    AtlasModelInfo model;
    AtlasCalibration calibration;
    AtlasCreateOptions options;
    int64_t numTokens = 0;
    std::vector<int32_t> layerComplete; // parallel to model.moeLayers, as in /progress

    // ---- openForUpdate() (members end in reverse order: file closed, then removed, then unlocked)
    FileLock updateLock; // <atlas>.lock, held until commitUpdate() or the end of the object
    fs::path target; // the atlas file commitUpdate() replaces (symlinks resolved)
    TempFile stagingFile; // <atlas>.update-XXXXXX; removed unless commitUpdate() renamed it
    h5::File staging;
    std::vector<std::string> written; // result groups written by this update, each replaced whole

    // Declared before the handles below so it is closed after them.
    h5::File file;
    h5::Group layersGroup;
    std::map<int, LayerHandles> layers;

    void requireOpen() const
    {
        if (!file)
            throw Error(path.string() + ": atlas is closed");
    }
    void requireWritable() const
    {
        requireOpen();
        if (!writable)
            throw Error(path.string() + ": atlas is open read-only");
    }
    // Routing records and progress: a capture's writes, not an update's.
    void requireCapture() const
    {
        requireWritable();
        if (updating)
            throw Error(path.string() + ": an update adds result groups only; routing records are a capture's");
    }

    // True when `group` is, or lies inside, a result group this update wrote (and so replaced).
    bool replacedByUpdate(const std::string& group) const
    {
        for (const std::string& w : written)
            if (group == w || (group.size() > w.size() && group.compare(0, w.size(), w) == 0 && group[w.size()] == '/'))
                return true;
        return false;
    }

    size_t slotOf(int layer) const
    {
        const auto it = std::find(model.moeLayers.begin(), model.moeLayers.end(), layer);
        if (it == model.moeLayers.end())
            throw InputError(path.string() + ": layer " + std::to_string(layer)
                + " is not a MoE layer of this atlas (MoE layers: " + joinInts(model.moeLayers) + ")");
        return static_cast<size_t>(it - model.moeLayers.begin());
    }

    LayerHandles& openLayer(int layer)
    {
        requireOpen();
        slotOf(layer);
        auto found = layers.find(layer);
        if (found != layers.end())
            return found->second;

        LayerHandles handles;
        handles.group = h5::openGroup(layersGroup.id(), schema::layerGroupName(layer));
        const hid_t g = handles.group.id();
        const auto rows = static_cast<hsize_t>(numTokens);
        const auto experts = static_cast<hsize_t>(model.numExperts);
        const auto k = static_cast<hsize_t>(model.topK);
        // Keep two logit chunks in cache while writing, so a block straddling a chunk boundary
        // or smaller than a chunk does not make HDF5 recompress the chunk on every write.
        const size_t logitBytes
            = std::min(rows, schema::kChunkTokens) * experts * (options.logitStorage == LogitStorage::Float16 ? 2 : 4);
        const size_t cacheBytes = writable ? std::max<size_t>(2 * logitBytes, 1 << 20) : 0;
        handles.logits = h5::openDataset(g, "router_logits", cacheBytes);
        handles.topkIds = h5::openDataset(g, "topk_ids");
        handles.topkWeights = h5::openDataset(g, "topk_weights");
        if (options.storeExpertNorms)
            handles.expertNorms = h5::openDataset(g, "expert_norms");

        auto checkShape = [&](const h5::Dataset& d, hsize_t columns) {
            const std::vector<hsize_t> dims = h5::shape(d.id());
            if (dims != std::vector<hsize_t> { rows, columns })
                h5::failRead(
                    d.id(), "", "shape is not [" + std::to_string(rows) + ", " + std::to_string(columns) + "]");
        };
        checkShape(handles.logits, experts);
        checkShape(handles.topkIds, k);
        checkShape(handles.topkWeights, k);
        if (handles.expertNorms)
            checkShape(handles.expertNorms, k);
        const h5::Datatype logitType = h5::datasetType(handles.logits.id());
        const bool half = h5::isHalfType(logitType.id());
        if (half != (options.logitStorage == LogitStorage::Float16))
            h5::failRead(handles.logits.id(), "", "datatype does not match logit_storage");
        return layers.emplace(layer, std::move(handles)).first->second;
    }

    // Reads rows of a [T, columns] float dataset, converting stored halves when `half`.
    std::vector<float> readFloatRows(hid_t dataset, bool half, int64_t begin, int64_t count, int64_t columns) const
    {
        if (begin < 0 || count < 0 || begin > numTokens || count > numTokens - begin)
            throw InputError(path.string() + ": token range [" + std::to_string(begin) + ", "
                + std::to_string(begin + count) + ") is outside [0, " + std::to_string(numTokens) + ")");
        const auto elements = static_cast<size_t>(count * columns);
        std::vector<float> values(elements);
        if (!half) {
            h5::readRows(
                dataset, H5T_NATIVE_FLOAT, static_cast<hsize_t>(begin), static_cast<hsize_t>(count), values.data());
            return values;
        }
        std::vector<uint16_t> raw(elements);
        const h5::Datatype halfType = h5::halfType();
        h5::readRows(dataset, halfType.id(), static_cast<hsize_t>(begin), static_cast<hsize_t>(count), raw.data());
        std::transform(raw.begin(), raw.end(), values.begin(), halfToFloat);
        return values;
    }

    void writeProgress()
    {
        h5::Dataset progress = h5::openDataset(file.id(), "progress/layers_complete");
        h5::writeAll(progress.id(), H5T_NATIVE_INT32, layerComplete.data());
    }

    // Closes every handle, the file last; false when HDF5 reports an error on the final close.
    bool close()
    {
        layers.clear();
        layersGroup.reset();
        return file.close();
    }
};

// Resolves m_impl, refusing a moved-from object (a template so it need not name the private Impl).
template <typename Pointer> AtlasState& checked(const Pointer& impl)
{
    if (!impl)
        throw Error("use of a moved-from AtlasFile");
    return *impl;
}

} // namespace

struct AtlasFile::Impl : AtlasState { };

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

namespace {

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

} // namespace

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

// ---- derived results (/scores, /statistics, /evaluation, /fisher) ---------------------------

const AtlasArray* AtlasResults::find(const std::string& name) const
{
    for (const AtlasArray& a : arrays)
        if (a.name == name)
            return &a;
    return nullptr;
}

fs::path AtlasFile::lockPathFor(const fs::path& atlas)
{
    std::error_code ec;
    fs::path resolved = fs::weakly_canonical(atlas, ec);
    if (ec)
        resolved = atlas;
    resolved += ".lock";
    return resolved;
}

namespace {

// Temporary files of updates of `target` that ended without commit or cleanup (killed, power
// loss). Called with the update lock held: no live update of this atlas has a file then.
void removeAbandonedUpdates(const fs::path& target)
{
    std::error_code ec;
    for (fs::directory_iterator it(target.parent_path(), ec), end; !ec && it != end; it.increment(ec)) {
        const fs::path entry = it->path();
        std::error_code ignored;
        if (isUniqueSiblingName(target, "update", entry.filename().string()) && it->is_regular_file(ignored))
            fs::remove(entry, ignored);
    }
}

} // namespace

AtlasFile AtlasFile::openForUpdate(const fs::path& path)
{
    return openForUpdate(path, LockWait {});
}

AtlasFile AtlasFile::openForUpdate(const fs::path& path, const LockWait& wait)
{
    const auto requireComplete = [&](const AtlasFile& atlas) {
        if (!atlas.isComplete())
            throw InputError(path.string()
                + ": the atlas is not complete (capture still running "
                  "or interrupted); finish it before scoring");
    };
    // Refuse what no wait would make updatable before waiting at all.
    requireComplete(openReadOnly(path));
    std::error_code ec;
    const fs::path target = fs::canonical(path, ec);
    if (ec)
        throw InputError(path.string() + ": " + ec.message());
    ensureWritableDirectory(target); // where the update's file and the lock file go
    const fs::perms permissions = fs::status(target, ec).permissions();
    if (ec)
        throw InputError(path.string() + ": " + ec.message());

    // Not under the HDF5 lock: other atlases of this process (another thread's update) go on.
    FileLock turn = FileLock::acquire(lockPathFor(path), wait, "another update of " + path.string());
    removeAbandonedUpdates(target);

    Lock lock(h5::libraryMutex());
    auto impl = std::make_unique<Impl>(); // ends before `lock`: closes, removes, unlocks on failure
    impl->updateLock = std::move(turn);
    impl->target = target;
    // Read once the lock is held, so what an update committed while this one waited is kept.
    loadExisting(impl.get(), target, false);
    impl->path = path;
    if (!impl->complete) // replaced by an unfinished file while this update waited
        throw InputError(path.string() + ": the atlas is not complete; finish it before scoring");
    impl->stagingFile.path = createUniqueSibling(target, "update", permissions);
    impl->staging = h5::createFile(impl->stagingFile.path);
    impl->finalPath = path;
    impl->updating = true;
    impl->writable = true;
    return AtlasFile(std::move(impl));
}

namespace {

// Opens (or, when `create`, creates) every component of a relative group path "a/b/c".
h5::Group openGroupPath(hid_t file, const std::string& group, bool create)
{
    h5::Group current;
    hid_t location = file;
    size_t begin = 0;
    while (begin < group.size()) {
        size_t end = group.find('/', begin);
        if (end == std::string::npos)
            end = group.size();
        const std::string part = group.substr(begin, end - begin);
        if (part.empty())
            throw Error("empty component in result group path \"" + group + "\"");
        h5::Group next;
        if (h5::exists(location, part))
            next = h5::openGroup(location, part);
        else if (create)
            next = h5::createGroup(location, part);
        else
            return {};
        current = std::move(next);
        location = current.id();
        begin = end + 1;
    }
    return current;
}

herr_t collectGroupName(hid_t location, const char* name, const H5L_info_t*, void* out)
{
    H5O_info_t info;
    if (H5Oget_info_by_name(location, name, &info, H5P_DEFAULT) >= 0 && info.type == H5O_TYPE_GROUP)
        static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
}

} // namespace

void AtlasFile::writeResults(const std::string& group, const AtlasResults& results)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireWritable();
    // An update writes into its own file; commitUpdate() adds the rest of the atlas around it.
    const hid_t file = impl.updating ? impl.staging.id() : impl.file.id();
    const size_t slash = group.rfind('/');
    h5::Group parent
        = slash == std::string::npos ? h5::openGroup(file, "/") : openGroupPath(file, group.substr(0, slash), true);
    const std::string leaf = slash == std::string::npos ? group : group.substr(slash + 1);
    if (h5::exists(parent.id(), leaf))
        h5::unlink(parent.id(), leaf); // replaced whole: stale arrays must not survive
    h5::Group g = h5::createGroup(parent.id(), leaf);
    h5::writeAttribute(g.id(), "params", results.paramsJson);
    h5::writeAttribute(g.id(), "inputs_hash", results.inputsHash);
    for (const AtlasArray& a : results.arrays) {
        std::vector<hsize_t> dims(a.dims.begin(), a.dims.end());
        size_t n = 1;
        for (hsize_t d : dims)
            n *= static_cast<size_t>(d);
        if (n != a.values.size())
            throw Error(impl.path.string() + ": /" + group + "/" + a.name + ": " + std::to_string(a.values.size())
                + " values for shape of " + std::to_string(n));
        h5::Dataset d = h5::createDataset(g.id(), a.name, H5T_IEEE_F64LE, dims);
        if (n > 0)
            h5::writeAll(d.id(), H5T_NATIVE_DOUBLE, a.values.data());
    }
    if (impl.updating && !impl.replacedByUpdate(group))
        impl.written.push_back(group);
    h5::flushFile(file, false);
}

std::optional<AtlasResults> AtlasFile::readResults(const std::string& group) const
{
    return readResults(group, {});
}

std::optional<AtlasResults> AtlasFile::readResults(
    const std::string& group, const std::vector<std::string>& arrays) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    // During an update a group it wrote is read from its file, any other from the atlas.
    const hid_t file = impl.updating && impl.replacedByUpdate(group) ? impl.staging.id() : impl.file.id();
    h5::Group g = openGroupPath(file, group, false);
    if (!g)
        return std::nullopt;
    AtlasResults results;
    if (h5::hasAttribute(g.id(), "params"))
        results.paramsJson = h5::readStringAttribute(g.id(), "params");
    if (h5::hasAttribute(g.id(), "inputs_hash"))
        results.inputsHash = h5::readStringAttribute(g.id(), "inputs_hash");
    std::vector<std::string> names;
    hsize_t index = 0;
    H5Literate(
        g.id(), H5_INDEX_NAME, H5_ITER_INC, &index,
        [](hid_t loc, const char* name, const H5L_info_t*, void* out) -> herr_t {
            H5O_info_t info;
            if (H5Oget_info_by_name(loc, name, &info, H5P_DEFAULT) >= 0 && info.type == H5O_TYPE_DATASET)
                static_cast<std::vector<std::string>*>(out)->emplace_back(name);
            return 0;
        },
        &names);
    for (const std::string& name : names) {
        if (!arrays.empty() && std::find(arrays.begin(), arrays.end(), name) == arrays.end())
            continue;
        h5::Dataset d = h5::openDataset(g.id(), name);
        AtlasArray a;
        a.name = name;
        for (hsize_t dim : h5::shape(d.id()))
            a.dims.push_back(dim);
        size_t n = 1;
        for (uint64_t dim : a.dims)
            n *= static_cast<size_t>(dim);
        a.values.resize(n);
        if (n > 0)
            h5::readAll(d.id(), H5T_NATIVE_DOUBLE, a.values.data());
        results.arrays.push_back(std::move(a));
    }
    return results;
}

std::vector<std::string> AtlasFile::resultGroups(const std::string& group) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    const auto subgroups = [&](hid_t file) {
        std::vector<std::string> names;
        h5::Group g = openGroupPath(file, group, false);
        if (!g)
            return names;
        hsize_t index = 0;
        H5Literate(g.id(), H5_INDEX_NAME, H5_ITER_INC, &index, collectGroupName, &names);
        return names;
    };
    if (!impl.updating)
        return subgroups(impl.file.id());
    if (impl.replacedByUpdate(group))
        return subgroups(impl.staging.id());
    // As commitUpdate() will merge them: the atlas's subgroups and those this update added.
    std::set<std::string> names;
    for (std::string& name : subgroups(impl.file.id()))
        names.insert(std::move(name));
    for (std::string& name : subgroups(impl.staging.id()))
        names.insert(std::move(name));
    return { names.begin(), names.end() };
}

namespace {

// Completes an update's file: every link of the atlas group `from` (path `prefix`) that the
// update did not replace is copied into `to`. A group present in both was created by the update
// as the parent of what it wrote ("fisher" of "fisher/ablation"): it gets the atlas group's
// attributes and is merged member by member. A group the update wrote is kept as written, and
// what the atlas had there is left behind, so the result holds no dead space.
void mergeAtlasInto(hid_t from, hid_t to, const std::string& prefix, const AtlasState& impl)
{
    h5::copyMissingAttributes(from, to);
    for (const std::string& name : h5::linkNames(from)) {
        std::string path = prefix;
        if (!path.empty())
            path += '/';
        path += name;
        if (!h5::exists(to, name)) {
            h5::copyLink(from, name, to);
        } else if (!impl.replacedByUpdate(path) && h5::isGroup(from, name) && h5::isGroup(to, name)) {
            const h5::Group source = h5::openGroup(from, name);
            const h5::Group target = h5::openGroup(to, name);
            mergeAtlasInto(source.id(), target.id(), path, impl);
        }
    }
}

} // namespace

void AtlasFile::commitUpdate()
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireWritable();
    if (!impl.updating)
        throw Error(impl.path.string() + ": commitUpdate() needs an atlas from openForUpdate()");
    {
        const h5::Group from = h5::openGroup(impl.file.id(), "/");
        const h5::Group to = h5::openGroup(impl.staging.id(), "/");
        mergeAtlasInto(from.id(), to.id(), "", impl);
    }
    h5::flushFile(impl.staging.id(), true);
    if (!impl.staging.close()) {
        const std::string detail = h5::takeErrorDetail();
        throw Error(impl.stagingFile.path.string() + ": closing the updated atlas failed"
            + (detail.empty() ? std::string() : " (HDF5: " + detail + ")"));
    }
    impl.close();
    commitFile(impl.stagingFile.path, impl.target);
    impl.stagingFile.release();
    impl.updating = false;
    impl.writable = false;
    impl.written.clear();
    // Reopen read-only so the object stays usable for reading back what was written; then let
    // the next update in.
    loadExisting(&impl, impl.target, false);
    impl.path = impl.finalPath;
    impl.updateLock.release();
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
