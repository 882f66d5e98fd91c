// The write side of /prefetch (docs/atlas-format.md, "/prefetch"): what a capture with --prefetch
// records. Kept apart from atlas_file.cpp (routing records) so that file stays one responsibility;
// the read side of /prefetch lives with the other readers.
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
    const std::string path = std::string(kPrefetchGroup) + "/" + predictor + "/" + schema::layerGroupName(layer);
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
}

} // namespace moeatlas
