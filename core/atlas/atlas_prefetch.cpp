// /prefetch (docs/atlas-format.md, "/prefetch"): what a capture with --prefetch records, written
// and read back. Kept apart from atlas_file.cpp (routing records) so that file stays one responsibility.
#include "atlas/atlas_file.h"

#include "atlas/atlas_state.h"

#include <limits>

namespace moeatlas {

using atlas_internal::AtlasState;
using atlas_internal::checked;
using atlas_internal::Lock;

namespace {

constexpr const char* kPrefetchGroup = "prefetch";

std::string joinNames(const std::vector<std::string>& names)
{
    std::string text;
    for (const std::string& n : names)
        text += (text.empty() ? "" : ",") + n;
    return text;
}

// The MoE layer `lookahead` MoE layers after `layer` (model order), or -1 when there is none.
int targetLayer(const AtlasState& impl, int layer, int lookahead)
{
    const std::size_t slot = impl.slotOf(layer) + static_cast<std::size_t>(lookahead);
    return slot < impl.model.moeLayers.size() ? impl.model.moeLayers[slot] : -1;
}

bool layerDone(const AtlasState& impl, int layer)
{
    return impl.layerComplete[impl.slotOf(layer)] != 0;
}

std::string lookaheadName(int lookahead)
{
    return "d" + std::to_string(lookahead);
}

// The group at `path` (components separated by '/') under `root`, created where missing.
h5::Group requireGroupPath(hid_t root, const std::vector<std::string>& path)
{
    h5::Group g;
    for (const std::string& part : path) {
        const hid_t at = g ? g.id() : root;
        g = h5::exists(at, part) ? h5::openGroup(at, part) : h5::createGroup(at, part);
    }
    return g;
}

void createPredictionDataset(const AtlasState& impl, hid_t layerGroup, int lookahead, int budget)
{
    const auto rows = static_cast<hsize_t>(impl.numTokens);
    const auto columns = static_cast<hsize_t>(budget);
    const hid_t idType = impl.model.numExperts <= std::numeric_limits<int16_t>::max() ? H5T_STD_I16LE : H5T_STD_I32LE;
    const hsize_t chunkRows = std::max<hsize_t>(1, std::min(rows, schema::kChunkTokens));
    const int gzip = impl.options.compressionLevel;
    h5::createDataset(
        layerGroup, lookaheadName(lookahead), idType, { rows, columns }, { { chunkRows, columns }, gzip, gzip > 0 });
}

// Checks a resumed capture's prefetch options against those the partial atlas was made with.
void checkSameOptions(const AtlasState& impl, hid_t g, const AtlasPrefetchInfo& info)
{
    const auto mismatch = [&](const std::string& what, const std::string& stored, const std::string& given) {
        throw InputError(impl.path.string() + ": cannot resume, /prefetch was recorded with " + what + " " + stored
            + ", this capture asks for " + given + "; give the same --prefetch options or delete the partial atlas");
    };
    const std::string predictors = h5::readStringAttribute(g, "predictors");
    if (predictors != joinNames(info.predictors))
        mismatch("predictors", predictors, joinNames(info.predictors));
    const int64_t lookahead = h5::readInt64Attribute(g, "max_lookahead");
    if (lookahead != info.maxLookahead)
        mismatch("lookahead", std::to_string(lookahead), std::to_string(info.maxLookahead));
    const int64_t budget = h5::readInt64Attribute(g, "budget");
    if (budget != info.budget)
        mismatch("budget", std::to_string(budget), std::to_string(info.budget));
    const double fraction = h5::readDoubleAttribute(g, "train_fraction");
    if (fraction != info.trainFraction)
        mismatch("training fraction", std::to_string(fraction), std::to_string(info.trainFraction));
    const uint64_t seed = h5::readUInt64Attribute(g, "split_seed");
    if (seed != info.splitSeed)
        mismatch("split seed", std::to_string(seed), std::to_string(info.splitSeed));
    h5::Dataset split = h5::openDataset(g, "train_sequences");
    std::vector<int8_t> stored(static_cast<std::size_t>(h5::shape(split.id()).at(0)));
    if (!stored.empty())
        h5::readAll(split.id(), H5T_NATIVE_INT8, stored.data());
    if (!std::equal(stored.begin(), stored.end(), info.trainSequences.begin(), info.trainSequences.end(),
            [](int8_t a, uint8_t b) { return static_cast<uint8_t>(a) == b; }))
        mismatch("a training split of", std::to_string(stored.size()) + " sequences",
            "another split (" + std::to_string(info.trainSequences.size()) + " sequences)");
}

void validateInfo(const AtlasState& impl, const AtlasPrefetchInfo& info)
{
    const std::string where = impl.path.string() + ": /prefetch: ";
    if (info.predictors.empty())
        throw Error(where + "no predictor to record");
    for (const std::string& p : info.predictors)
        if (p != "next-router" && p != "quasi-hidden" && p != "linear" && p != "mlp")
            throw Error(where + "'" + p + "' is not a recorded predictor (next-router, quasi-hidden, linear, mlp)");
    if (info.maxLookahead < 1 || info.maxLookahead > 3
        || info.maxLookahead >= static_cast<int>(impl.model.moeLayers.size()))
        throw Error(where + "lookahead " + std::to_string(info.maxLookahead) + " outside [1, min(3, "
            + std::to_string(impl.model.moeLayers.size() - 1) + ")]");
    if (info.budget < impl.model.topK || info.budget > impl.model.numExperts)
        throw Error(where + "budget " + std::to_string(info.budget) + " outside [" + std::to_string(impl.model.topK)
            + ", " + std::to_string(impl.model.numExperts) + "]");
    h5::Dataset offsets = h5::openDataset(impl.file.id(), "tokens/seq_offsets");
    const std::size_t numSeqs = h5::shape(offsets.id()).at(0) - 1;
    if (info.trainSequences.size() != numSeqs)
        throw Error(where + "training split of " + std::to_string(info.trainSequences.size())
            + " sequences, the atlas has " + std::to_string(numSeqs));
}

} // namespace

void AtlasFile::createPrefetch(const AtlasPrefetchInfo& info)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireCapture();
    validateInfo(impl, info);
    const hid_t f = impl.file.id();
    const bool resumed = h5::exists(f, kPrefetchGroup);
    if (!resumed) {
        std::vector<int> done;
        for (int layer : impl.model.moeLayers)
            if (layerDone(impl, layer))
                done.push_back(layer);
        if (!done.empty())
            throw InputError(impl.path.string() + ": cannot record predictions: the partial atlas was captured "
                + "without --prefetch and MoE layers " + atlas_internal::joinInts(done)
                + " are complete; resume without --prefetch or delete it to start over");
    }
    h5::Group g = resumed ? h5::openGroup(f, kPrefetchGroup) : h5::createGroup(f, kPrefetchGroup);
    if (resumed) {
        checkSameOptions(impl, g.id(), info);
    } else {
        h5::writeAttribute(g.id(), "predictors", joinNames(info.predictors));
        h5::writeAttribute(g.id(), "max_lookahead", static_cast<int64_t>(info.maxLookahead));
        h5::writeAttribute(g.id(), "budget", static_cast<int64_t>(info.budget));
        h5::writeAttribute(g.id(), "train_fraction", info.trainFraction);
        h5::writeAttribute(g.id(), "split_seed", info.splitSeed); // uint64, as /calibration's seed
        std::vector<int8_t> split(info.trainSequences.begin(), info.trainSequences.end());
        h5::Dataset d = h5::createDataset(g.id(), "train_sequences", H5T_STD_I8LE, { split.size() });
        if (!split.empty())
            h5::writeAll(d.id(), H5T_NATIVE_INT8, split.data());
    }
    // Every prediction dataset, sized for all tokens. On resume, those whose target layer is not complete are
    // recreated (as /layers/<l> are: a write cut off mid-way may have left their chunk index half updated).
    for (const std::string& predictor : info.predictors) {
        h5::Group pg = requireGroupPath(g.id(), { predictor });
        for (int layer : impl.model.moeLayers) {
            if (targetLayer(impl, layer, 1) < 0)
                continue;
            h5::Group lg = requireGroupPath(pg.id(), { schema::layerGroupName(layer) });
            for (int d = 1; d <= info.maxLookahead; ++d) {
                const int target = targetLayer(impl, layer, d);
                if (target < 0)
                    break;
                if (h5::exists(lg.id(), lookaheadName(d))) {
                    if (layerDone(impl, target))
                        continue;
                    h5::unlink(lg.id(), lookaheadName(d));
                }
                createPredictionDataset(impl, lg.id(), d, info.budget);
            }
        }
    }
    // Default vectors of layers not complete are written again with their layer.
    for (const char* name : { "default_vectors", "default_vector_counts" }) {
        if (!h5::exists(g.id(), name))
            continue;
        h5::Group dg = h5::openGroup(g.id(), name);
        for (int layer : impl.model.moeLayers)
            if (!layerDone(impl, layer) && h5::exists(dg.id(), schema::layerGroupName(layer)))
                h5::unlink(dg.id(), schema::layerGroupName(layer));
    }
    h5::flushFile(f, true);
}

void AtlasFile::writePrefetchBlock(
    const std::string& predictor, int layer, int lookahead, int64_t tokenBegin, int64_t numTokens, const int32_t* ids)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireCapture();
    const std::string where = impl.path.string() + ": /prefetch/" + predictor + "/" + std::to_string(layer) + "/"
        + lookaheadName(lookahead) + ": ";
    const int target = lookahead >= 1 ? targetLayer(impl, layer, lookahead) : -1;
    if (target < 0)
        throw Error(where + "MoE layer " + std::to_string(layer) + " has no MoE layer " + std::to_string(lookahead)
            + " ahead of it");
    if (layerDone(impl, target))
        throw Error(where + "its target layer " + std::to_string(target) + " is already marked complete");
    if (tokenBegin < 0 || numTokens < 0 || tokenBegin > impl.numTokens || numTokens > impl.numTokens - tokenBegin)
        throw Error(where + "tokens [" + std::to_string(tokenBegin) + ", " + std::to_string(tokenBegin + numTokens)
            + ") are outside [0, " + std::to_string(impl.numTokens) + ")");
    if (!h5::exists(impl.file.id(), kPrefetchGroup))
        throw Error(where + "createPrefetch() was not called");
    h5::Group g = h5::openGroup(impl.file.id(), kPrefetchGroup);
    if (!h5::exists(g.id(), predictor))
        throw Error(where + "'" + predictor + "' is not a predictor this atlas records");
    h5::Group lg = h5::openGroup(h5::openGroup(g.id(), predictor).id(), schema::layerGroupName(layer));
    if (!h5::exists(lg.id(), lookaheadName(lookahead)))
        throw Error(where + "lookahead beyond the recorded max_lookahead");
    h5::Dataset d = h5::openDataset(lg.id(), lookaheadName(lookahead), std::size_t { 1 } << 20);
    const std::vector<hsize_t> dims = h5::shape(d.id());
    if (numTokens == 0)
        return;
    if (ids == nullptr)
        throw Error(where + "no ids given");
    const auto columns = static_cast<std::size_t>(dims.at(1));
    const auto count = static_cast<std::size_t>(numTokens) * columns;
    for (std::size_t i = 0; i < count; ++i)
        if (ids[i] < 0 || ids[i] >= impl.model.numExperts)
            throw Error(where + "expert id " + std::to_string(ids[i]) + " is outside [0, "
                + std::to_string(impl.model.numExperts) + ")");
    h5::writeRows(d.id(), H5T_NATIVE_INT32, static_cast<hsize_t>(tokenBegin), static_cast<hsize_t>(numTokens), ids);
}

void AtlasFile::writeDefaultVectors(int layer, std::span<const float> values, std::span<const int64_t> counts)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireCapture();
    const std::string where = impl.path.string() + ": /prefetch/default_vectors/" + std::to_string(layer) + ": ";
    if (layerDone(impl, layer))
        throw Error(where + "layer " + std::to_string(layer) + " is already marked complete");
    const auto E = static_cast<std::size_t>(impl.model.numExperts);
    const auto H = static_cast<std::size_t>(impl.model.hiddenSize);
    if (values.size() != E * H || counts.size() != E)
        throw Error(where + std::to_string(values.size()) + " values and " + std::to_string(counts.size())
            + " counts, expected [" + std::to_string(E) + ", " + std::to_string(H) + "] and [" + std::to_string(E)
            + "]");
    if (!h5::exists(impl.file.id(), kPrefetchGroup))
        throw Error(where + "createPrefetch() was not called");
    h5::Group g = h5::openGroup(impl.file.id(), kPrefetchGroup);
    const std::string name = schema::layerGroupName(layer);
    h5::Group vg = requireGroupPath(g.id(), { "default_vectors" });
    h5::Group cg = requireGroupPath(g.id(), { "default_vector_counts" });
    for (hid_t group : { vg.id(), cg.id() })
        if (h5::exists(group, name))
            h5::unlink(group, name);
    h5::Dataset v = h5::createDataset(vg.id(), name, H5T_IEEE_F32LE, { E, H });
    h5::writeAll(v.id(), H5T_NATIVE_FLOAT, values.data());
    h5::Dataset c = h5::createDataset(cg.id(), name, H5T_STD_I64LE, { E });
    h5::writeAll(c.id(), H5T_NATIVE_INT64, counts.data());
}

void AtlasFile::writeLearnedEstimator(
    const std::string& predictor, int layer, int lookahead, const AtlasLearnedEstimator& e)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireCapture();
    const std::string where = impl.path.string() + ": /prefetch/learned/" + predictor + "/" + std::to_string(layer)
        + "/" + lookaheadName(lookahead) + ": ";
    if (predictor != "linear" && predictor != "mlp")
        throw Error(where + "'" + predictor + "' is not a learned estimator (linear, mlp)");
    if (lookahead < 1 || targetLayer(impl, layer, lookahead) < 0)
        throw Error(where + "MoE layer " + std::to_string(layer) + " has no MoE layer " + std::to_string(lookahead)
            + " ahead of it");
    if (!h5::exists(impl.file.id(), kPrefetchGroup))
        throw Error(where + "createPrefetch() was not called");
    h5::Group g = h5::openGroup(impl.file.id(), kPrefetchGroup);
    h5::Group lg = requireGroupPath(g.id(), { "learned", predictor, schema::layerGroupName(layer) });
    if (h5::exists(lg.id(), lookaheadName(lookahead)))
        h5::unlink(lg.id(), lookaheadName(lookahead));
    h5::Group dg = h5::createGroup(lg.id(), lookaheadName(lookahead));
    for (const AtlasArray& a : e.parameters) {
        std::size_t n = 1;
        for (const uint64_t dim : a.dims)
            n *= static_cast<std::size_t>(dim);
        if (a.name.empty() || a.name.find('/') != std::string::npos || n != a.values.size())
            throw Error(where + "parameter '" + a.name + "' has " + std::to_string(a.values.size())
                + " values for its shape (or a bad name)");
        const std::vector<float> values(a.values.begin(), a.values.end());
        const std::vector<hsize_t> dims(a.dims.begin(), a.dims.end());
        h5::Dataset d = h5::createDataset(dg.id(), a.name, H5T_IEEE_F32LE, dims);
        if (n > 0)
            h5::writeAll(d.id(), H5T_NATIVE_FLOAT, values.data());
    }
    h5::writeAttribute(dg.id(), "train_loss", e.trainLoss);
    h5::writeAttribute(dg.id(), "heldout_loss", e.heldoutLoss);
    h5::writeAttribute(dg.id(), "epochs", e.epochs);
    h5::writeAttribute(dg.id(), "train_tokens", e.trainTokens);
    if (!e.optionsJson.empty())
        h5::writeAttribute(dg.id(), "options", e.optionsJson);
}

// ---- /prefetch: reading (docs/atlas-format.md, "/prefetch") --------------------------------

namespace {

// The group at the relative path `group` ("prefetch/next-router/3"); invalid when a component is missing.
h5::Group openPrefetchGroup(hid_t file, const std::string& group)
{
    h5::Group current;
    hid_t location = file;
    std::size_t begin = 0;
    while (begin < group.size()) {
        std::size_t end = group.find('/', begin);
        if (end == std::string::npos)
            end = group.size();
        const std::string part = group.substr(begin, end - begin);
        if (!h5::exists(location, part) || !h5::isGroup(location, part))
            return {};
        current = h5::openGroup(location, part);
        location = current.id();
        begin = end + 1;
    }
    return current;
}

std::string prefetchLayerPath(const std::string& predictor, int layer, int lookahead)
{
    return "prefetch/" + predictor + "/" + schema::layerGroupName(layer) + "/d" + std::to_string(lookahead);
}

std::vector<hsize_t> prefetchShape(hid_t dataset, std::size_t rank, const std::string& what)
{
    std::vector<hsize_t> dims = h5::shape(dataset);
    if (dims.size() != rank)
        h5::failRead(dataset, "", "is not " + what);
    return dims;
}

} // namespace

std::optional<AtlasPrefetchInfo> AtlasFile::prefetchInfo() const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    const hid_t f = impl.file.id();
    if (!h5::exists(f, "prefetch"))
        return std::nullopt;
    h5::Group g = h5::openGroup(f, "prefetch");
    AtlasPrefetchInfo info;
    const std::string names = h5::readStringAttribute(g.id(), "predictors");
    for (std::size_t begin = 0; begin <= names.size();) {
        std::size_t end = names.find(',', begin);
        if (end == std::string::npos)
            end = names.size();
        std::string name = names.substr(begin, end - begin);
        name.erase(0, name.find_first_not_of(' '));
        name.erase(name.find_last_not_of(' ') + 1);
        if (!name.empty())
            info.predictors.push_back(name);
        begin = end + 1;
    }
    const int64_t maxLookahead = h5::readInt64Attribute(g.id(), "max_lookahead");
    const int64_t budget = h5::readInt64Attribute(g.id(), "budget");
    if (maxLookahead < 1 || maxLookahead > static_cast<int64_t>(impl.model.moeLayers.size()))
        h5::failRead(g.id(), "",
            "attribute 'max_lookahead' is " + std::to_string(maxLookahead) + ", expected 1 to the MoE layer count");
    if (budget < impl.model.topK || budget > impl.model.numExperts)
        h5::failRead(g.id(), "",
            "attribute 'budget' is " + std::to_string(budget) + ", expected " + std::to_string(impl.model.topK)
                + " (top-k) to " + std::to_string(impl.model.numExperts) + " (experts)");
    info.maxLookahead = static_cast<int>(maxLookahead);
    info.budget = static_cast<int>(budget);
    info.trainFraction = h5::readDoubleAttribute(g.id(), "train_fraction");
    info.splitSeed = h5::readUInt64Attribute(g.id(), "split_seed");

    h5::Dataset split = h5::openDataset(g.id(), "train_sequences");
    const std::vector<hsize_t> dims = prefetchShape(split.id(), 1, "one-dimensional");
    h5::Dataset offsets = h5::openDataset(f, "tokens/seq_offsets");
    const std::vector<hsize_t> offsetDims = h5::shape(offsets.id());
    const hsize_t sequences = offsetDims.empty() || offsetDims[0] == 0 ? 0 : offsetDims[0] - 1;
    if (dims[0] != sequences)
        h5::failRead(split.id(), "",
            "has " + std::to_string(dims[0]) + " entries, expected one per sequence (" + std::to_string(sequences)
                + ")");
    const h5::Datatype type = h5::datasetType(split.id());
    if (H5Tget_class(type.id()) != H5T_INTEGER)
        h5::failRead(split.id(), "", "is not an integer dataset");
    info.trainSequences.resize(dims[0]);
    if (!info.trainSequences.empty())
        h5::readAll(split.id(), H5T_NATIVE_UINT8, info.trainSequences.data());
    for (const uint8_t v : info.trainSequences)
        if (v > 1)
            h5::failRead(split.id(), "", "holds " + std::to_string(v) + ", expected 0 (held out) or 1 (training)");
    return info;
}

std::vector<int32_t> AtlasFile::readPrefetchIds(const std::string& predictor, int layer, int lookahead) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    impl.slotOf(layer);
    const std::string path = prefetchLayerPath(predictor, layer, lookahead);
    const std::size_t slash = path.rfind('/');
    h5::Group parent = openPrefetchGroup(impl.file.id(), path.substr(0, slash));
    const std::string leaf = path.substr(slash + 1);
    if (!parent || !h5::exists(parent.id(), leaf))
        throw InputError(impl.path.string() + ": /" + path + ": dataset is missing (predictions of '" + predictor
            + "' at layer " + std::to_string(layer) + " for lookahead " + std::to_string(lookahead) + ")");
    h5::Dataset d = h5::openDataset(parent.id(), leaf);
    const std::vector<hsize_t> dims = prefetchShape(d.id(), 2, "two-dimensional [T, budget]");
    if (dims[0] != static_cast<hsize_t>(impl.numTokens) || dims[1] == 0)
        h5::failRead(d.id(), "",
            "shape is [" + std::to_string(dims[0]) + ", " + std::to_string(dims[1]) + "], expected ["
                + std::to_string(impl.numTokens) + ", budget]");
    std::vector<int32_t> ids = h5::readVector<int32_t>(d.id());
    for (const int32_t id : ids)
        if (id < 0 || id >= impl.model.numExperts)
            h5::failRead(d.id(), "",
                "holds expert id " + std::to_string(id) + ", outside [0, " + std::to_string(impl.model.numExperts)
                    + ")");
    return ids;
}

std::pair<std::vector<float>, std::vector<int64_t>> AtlasFile::readDefaultVectors(int layer) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    impl.slotOf(layer);
    const std::string name = schema::layerGroupName(layer);
    h5::Group values = openPrefetchGroup(impl.file.id(), "prefetch/default_vectors");
    h5::Group counts = openPrefetchGroup(impl.file.id(), "prefetch/default_vector_counts");
    const bool haveValues = values && h5::exists(values.id(), name);
    const bool haveCounts = counts && h5::exists(counts.id(), name);
    if (!haveValues && !haveCounts)
        return {};
    if (!haveValues || !haveCounts)
        throw InputError(impl.path.string() + ": /prefetch/"
            + (haveValues ? "default_vector_counts/" : "default_vectors/") + name
            + ": dataset is missing (default vectors and their counts come together)");
    h5::Dataset v = h5::openDataset(values.id(), name);
    h5::Dataset c = h5::openDataset(counts.id(), name);
    const auto experts = static_cast<hsize_t>(impl.model.numExperts);
    const auto hidden = static_cast<hsize_t>(impl.model.hiddenSize);
    if (prefetchShape(v.id(), 2, "two-dimensional [E, H]") != std::vector<hsize_t> { experts, hidden })
        h5::failRead(v.id(), "", "shape is not [" + std::to_string(experts) + ", " + std::to_string(hidden) + "]");
    if (prefetchShape(c.id(), 1, "one-dimensional [E]")[0] != experts)
        h5::failRead(c.id(), "", "shape is not [" + std::to_string(experts) + "]");
    return { h5::readVector<float>(v.id()), h5::readVector<int64_t>(c.id()) };
}

std::optional<AtlasLearnedEstimator> AtlasFile::readLearnedEstimator(
    const std::string& predictor, int layer, int lookahead) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    impl.slotOf(layer);
    h5::Group g = openPrefetchGroup(impl.file.id(),
        "prefetch/learned/" + predictor + "/" + schema::layerGroupName(layer) + "/d" + std::to_string(lookahead));
    if (!g)
        return std::nullopt;
    AtlasLearnedEstimator e;
    e.trainLoss = h5::readDoubleAttribute(g.id(), "train_loss");
    e.heldoutLoss = h5::readDoubleAttribute(g.id(), "heldout_loss");
    e.epochs = h5::readInt64Attribute(g.id(), "epochs");
    e.trainTokens = h5::readInt64Attribute(g.id(), "train_tokens");
    if (h5::hasAttribute(g.id(), "options"))
        e.optionsJson = h5::readStringAttribute(g.id(), "options");
    for (const std::string& name : h5::linkNames(g.id())) {
        if (h5::isGroup(g.id(), name))
            continue;
        h5::Dataset d = h5::openDataset(g.id(), name);
        AtlasArray a;
        a.name = name;
        for (const hsize_t dim : h5::shape(d.id()))
            a.dims.push_back(dim);
        const std::vector<float> values = h5::readVector<float>(d.id());
        a.values.assign(values.begin(), values.end());
        e.parameters.push_back(std::move(a));
    }
    return e;
}

} // namespace moeatlas
