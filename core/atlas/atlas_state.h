// AtlasFile's state (AtlasFile::Impl), shared by the files that implement it: atlas_file.cpp (create,
// open, routing blocks) and atlas_update.cpp (result groups and updates). Internal to core/atlas.
#pragma once

#include "atlas/atlas_file.h"
#include "atlas/atlas_schema.h"
#include "atlas/h5.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/file_lock.h"
#include "util/half.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace moeatlas {

namespace atlas_internal {

namespace fs = std::filesystem;

using Lock = std::lock_guard<std::recursive_mutex>;

// Open handles of one /layers/<layer> group; opened on first use and kept while the file is.
struct LayerHandles {
    h5::Group group;
    h5::Dataset logits;
    h5::Dataset topkIds;
    h5::Dataset topkWeights;
    h5::Dataset expertNorms; // invalid when not stored
};

inline std::string joinInts(const std::vector<int>& values)
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
    // /layers attribute ids_only = 1: layers hold topk_ids only (expert ids ingested from an
    // inference engine by python -m moeatlas.ingest; docs/atlas-format.md). Read-only.
    bool idsOnly = false;
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
        handles.topkIds = h5::openDataset(g, "topk_ids");
        if (idsOnly) {
            if (h5::shape(handles.topkIds.id()) != std::vector<hsize_t> { rows, k })
                h5::failRead(
                    handles.topkIds.id(), "", "shape is not [" + std::to_string(rows) + ", " + std::to_string(k) + "]");
            return layers.emplace(layer, std::move(handles)).first->second;
        }
        handles.logits = h5::openDataset(g, "router_logits", cacheBytes);
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

    // Throws for an ids-only atlas: what it lacks and which results need it.
    void requireLogits(int layer) const
    {
        if (idsOnly)
            throw InputError(path.string() + ": /layers/" + std::to_string(layer)
                + "/router_logits: this atlas holds routed expert ids only (/layers ids_only = 1, ingested from an "
                  "inference engine's output), no router logits or weights; peu, act_logits, all_logits, soft_mass, "
                  "probmoe_marginal, reap, ean and the softmax statistics need them. Its frequency scores and "
                  "id-based routing statistics were stored by python -m moeatlas.ingest (docs/python.md)");
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

// Reads the metadata of the atlas at `path` into impl and opens it (writable: for resume).
void loadExisting(AtlasState* impl, const fs::path& path, bool writable);

} // namespace atlas_internal

struct AtlasFile::Impl : atlas_internal::AtlasState { };

} // namespace moeatlas
