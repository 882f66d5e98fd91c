// Reference test: atlases written here are read by h5py (tests/atlas/read_atlas.py) strictly as
// docs/atlas-format.md documents them — paths, dtypes (float16 included), shapes, attributes
// and values.
#include "atlas/atlas_file.h"
#include "atlas_test_data.h"
#include "test_support.h"

#include <QTemporaryDir>
#include <QTest>

#include <filesystem>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;

namespace {

// /prefetch of the "full" atlas (read_atlas.py computes the same): both recorded predictors, lookahead 1 (the
// test model's MoE layers are 1 and 3), budget 4, a split seed above INT64_MAX (uint64 storage).
AtlasPrefetchInfo testPrefetchInfo()
{
    AtlasPrefetchInfo info;
    info.predictors = { "next-router", "quasi-hidden" };
    info.maxLookahead = 1;
    info.budget = 4;
    info.trainFraction = 0.5;
    info.splitSeed = 9223372036854775813ull;
    info.trainSequences = { 1, 0, 1, 0, 1 };
    return info;
}

int32_t testPrefetchId(int64_t t, int slot, int predictor)
{
    return static_cast<int32_t>((t + 3 * slot + predictor) % 8);
}

// The predictions of layer 1 for layer 3 in two blocks, the default vectors of both layers, one estimator.
void writeTestPrefetch(AtlasFile& atlas, int64_t numTokens, int64_t hidden)
{
    const AtlasPrefetchInfo info = testPrefetchInfo();
    for (std::size_t p = 0; p < info.predictors.size(); ++p)
        for (const auto& [begin, end] : { std::pair<int64_t, int64_t> { 1500, numTokens }, { 0, 1500 } }) {
            std::vector<int32_t> ids;
            for (int64_t t = begin; t < end; ++t)
                for (int i = 0; i < info.budget; ++i)
                    ids.push_back(testPrefetchId(t, i, static_cast<int>(p)));
            atlas.writePrefetchBlock(info.predictors[p], 1, 1, begin, end - begin, ids.data());
        }
    for (int layer : { 1, 3 }) {
        std::vector<float> values;
        std::vector<int64_t> counts;
        for (int e = 0; e < 8; ++e) {
            counts.push_back(e * 10 + layer);
            for (int64_t h = 0; h < hidden; ++h)
                values.push_back(static_cast<float>(e * hidden + h) * 0.5f - static_cast<float>(layer));
        }
        atlas.writeDefaultVectors(layer, values, counts);
    }
    AtlasLearnedEstimator est;
    est.parameters.push_back({ "weight", { 8, static_cast<uint64_t>(hidden) }, {} });
    for (int64_t i = 0; i < 8 * hidden; ++i)
        est.parameters.back().values.push_back(static_cast<double>(i) * 0.25 - 3.0);
    est.parameters.push_back({ "bias", { 8 }, { 1, 2, 3, 4, 5, 6, 7, 8 } });
    est.trainLoss = 0.5;
    est.heldoutLoss = 0.75;
    est.epochs = 3;
    est.trainTokens = 1000;
    est.optionsJson = R"({"epochs":3,"kind":"linear"})";
    atlas.writeLearnedEstimator("linear", 1, 1, est);
}

} // namespace

class TstAtlasH5py : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void h5pyReadsTheDocumentedSchema();
};

void TstAtlasH5py::h5pyReadsTheDocumentedSchema()
{
    if (pythonExecutable().isEmpty())
        QSKIP("MOEATLAS_PYTHON is not set (run through ctest)");
    QTemporaryDir dir;
    const fs::path root = dir.path().toStdString();
    const AtlasTestData d = makeTestData();
    auto create = [&](const fs::path& path, const AtlasCreateOptions& options) {
        return AtlasFile::create(path, d.model, d.calibration, d.tokens, d.domainIds, d.seqOffsets, options);
    };

    AtlasCreateOptions full;
    full.storeExpertNorms = true;
    full.hiddenSampleCount = 4;
    full.compressionLevel = 4;
    {
        AtlasFile atlas = create(root / "full.h5", full);
        atlas.createPrefetch(testPrefetchInfo());
        writeTestPrefetch(atlas, static_cast<int64_t>(d.tokens.size()), d.model.hiddenSize);
        for (int layer : d.model.moeLayers) {
            writeTestLayer(atlas, layer);
            writeTestHiddenSamples(atlas, layer);
            atlas.markLayerComplete(layer);
        }
        atlas.finalize();
    }

    AtlasCreateOptions half;
    half.logitStorage = LogitStorage::Float16;
    half.compressionLevel = 0;
    {
        AtlasFile atlas = create(root / "half.h5", half);
        for (int layer : d.model.moeLayers) {
            writeTestLayer(atlas, layer, 1024);
            atlas.markLayerComplete(layer);
        }
        atlas.finalize();
    }

    AtlasCreateOptions partial;
    partial.compressionLevel = 4;
    {
        AtlasFile atlas = create(root / "partial.h5", partial);
        writeTestLayer(atlas, 1);
        atlas.markLayerComplete(1);
        const TestBlock block = makeTestBlock(d.model, 3, 0, 700, false);
        atlas.writeRouterBlock(block.block);
    } // left unfinished

    const ProcessResult result = runPython(QStringLiteral("tests/atlas/read_atlas.py"),
        { QStringLiteral("--full"), QString::fromStdString((root / "full.h5").string()), QStringLiteral("--half"),
            QString::fromStdString((root / "half.h5").string()), QStringLiteral("--partial"),
            QString::fromStdString((root / "partial.h5.partial").string()) });
    if (result.exitCode != 0)
        qWarning().noquote() << result.stdOut << result.stdErr;
    QCOMPARE(result.exitCode, 0);
}

QTEST_GUILESS_MAIN(TstAtlasH5py)
#include "tst_atlas_h5py.moc"
