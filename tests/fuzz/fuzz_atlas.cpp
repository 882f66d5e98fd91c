// libFuzzer target for opening an atlas: the input is a whole .atlas.h5 file, opened read-only as
// `score`, `plan`, `eval --atlas` and the workbench open one, then read: model, calibration, tokens,
// every completed layer's routing records, the result groups and the stored expert scores. Only
// moeatlas::Error (InputError for a damaged or foreign file) may escape.
#include "atlas/atlas_file.h"
#include "fuzz_support.h"
#include "plan/atlas_scores.h"
#include "util/error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

// libhdf5 1.10.8 (Debian 12's) trusts the global heap collections ("GCOL": where variable-length
// strings live) of the file it reads: a free-space object (index 0) of size 0 with room for more never
// returns (its deserializer's loop does not advance), an object larger than its collection is copied
// out past the collection's end (memcpy of its size). This target found both in its first minutes; the
// atlas reader does not guard against them (decision 57). Such inputs are skipped here so that the
// target keeps finding everything else; tests/fuzz/known-hdf5/gcol-*.atlas.h5 are two. A third kind,
// a variable-length string longer than its heap object (known-hdf5/vlen-overflow.atlas.h5), lies in
// HDF5's object headers and is not filtered: CI replays this target's seeds, it does not mutate them.
bool hasBrokenGlobalHeap(std::string_view file)
{
    constexpr std::size_t kHeader = 16; // signature, version, 3 reserved, collection size (8)
    constexpr std::size_t kObjectHeader = 16; // index (2), references (2), reserved (4), size (8)
    const auto u64 = [&](std::size_t at) {
        uint64_t v = 0;
        for (std::size_t i = 0; i < 8; ++i)
            v |= static_cast<uint64_t>(static_cast<uint8_t>(file[at + i])) << (8 * i);
        return v;
    };
    for (std::size_t at = file.find("GCOL"); at != std::string_view::npos; at = file.find("GCOL", at + 1)) {
        if (at + kHeader > file.size())
            break;
        const uint64_t size = u64(at + 8);
        const std::size_t end = size <= file.size() - at ? at + static_cast<std::size_t>(size) : file.size();
        std::size_t p = at + kHeader;
        while (p + kObjectHeader <= end) {
            const unsigned index
                = static_cast<uint8_t>(file[p]) | (static_cast<unsigned>(static_cast<uint8_t>(file[p + 1])) << 8);
            const uint64_t objectSize = u64(p + 8);
            if (index == 0 && objectSize == 0)
                return true;
            if (index > 0 && objectSize > end - p - kObjectHeader)
                return true;
            const uint64_t need = index > 0 ? kObjectHeader + ((objectSize + 7) & ~uint64_t { 7 }) : objectSize;
            if (need > end - p)
                break;
            p += static_cast<std::size_t>(need);
        }
    }
    return false;
}

void readEverything(const moeatlas::AtlasFile& atlas)
{
    (void)atlas.isComplete();
    (void)atlas.model();
    (void)atlas.calibration();
    (void)atlas.options();
    (void)atlas.numTokens();
    (void)atlas.tokens();
    (void)atlas.domainIds();
    (void)atlas.seqOffsets();
    for (const int layer : atlas.completedLayers()) {
        (void)atlas.readLogits(layer);
        (void)atlas.readTopkIds(layer);
        (void)atlas.readTopkWeights(layer);
        (void)atlas.readExpertNorms(layer);
        (void)atlas.readTopkIds(layer, 0, 1);
        (void)atlas.readHiddenSamples(layer);
    }
    for (const std::string& top : { std::string("scores"), std::string("fisher"), std::string("probmoe") })
        for (const std::string& group : atlas.resultGroups(top))
            (void)atlas.readResults(top + "/" + group);
    (void)atlas.readResults("statistics");
    if (const auto prefetch = atlas.prefetchInfo()) {
        const std::vector<int>& moeLayers = atlas.model().moeLayers;
        for (const std::string& predictor : prefetch->predictors)
            for (const int layer : moeLayers) {
                (void)atlas.readDefaultVectors(layer);
                for (int d = 1; d <= prefetch->maxLookahead && d <= 3; ++d)
                    try {
                        (void)atlas.readPrefetchIds(predictor, layer, d);
                    } catch (const moeatlas::InputError&) {
                        // a lookahead past the last MoE layer is not recorded
                    }
            }
    }
    for (const std::string& criterion : atlas.resultGroups("scores"))
        (void)moeatlas::readAtlasScores(atlas, criterion);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    if (hasBrokenGlobalHeap(moeatlas::fuzz::asText(data, size)))
        return 0;
    const auto path = moeatlas::fuzz::writeFile("fuzz.atlas.h5", moeatlas::fuzz::asText(data, size));
    try {
        const moeatlas::AtlasFile atlas = moeatlas::AtlasFile::openReadOnly(path);
        readEverything(atlas);
    } catch (const moeatlas::Error&) {
    }
    return 0;
}
