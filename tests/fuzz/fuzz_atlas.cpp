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
#include <vector>

namespace {

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
    const auto path = moeatlas::fuzz::writeFile("fuzz.atlas.h5", moeatlas::fuzz::asText(data, size));
    try {
        const moeatlas::AtlasFile atlas = moeatlas::AtlasFile::openReadOnly(path);
        readEverything(atlas);
    } catch (const moeatlas::Error&) {
    }
    return 0;
}
