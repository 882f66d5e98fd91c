// Unit tests of core/atlas: fp16 conversion, round trips, partial files and resume, a capture
// killed mid-layer, and the errors a user sees for bad paths and foreign files.
#include "atlas/atlas_file.h"
#include "atlas_test_data.h"
#include "util/error.h"
#include "util/half.h"

#include <QTemporaryDir>
#include <QTest>

#include <hdf5.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;

namespace {

fs::path tempPath(const QTemporaryDir& dir, const char* name)
{
    return fs::path(dir.path().toStdString()) / name;
}

AtlasFile createTestAtlas(const fs::path& path, const AtlasTestData& d, const AtlasCreateOptions& options)
{
    return AtlasFile::create(path, d.model, d.calibration, d.tokens, d.domainIds, d.seqOffsets, options);
}

// Checks every record of `layer` against the formulas of atlas_test_data.h.
void verifyLayer(const AtlasFile& atlas, int layer, bool half)
{
    const int64_t numTokens = atlas.numTokens();
    const int e = atlas.model().numExperts, k = atlas.model().topK;
    const std::vector<float> logits = atlas.readLogits(layer);
    QCOMPARE(static_cast<int64_t>(logits.size()), numTokens * e);
    for (int64_t t = 0; t < numTokens; ++t) {
        for (int x = 0; x < e; ++x) {
            const float want = testLogit(layer, t, x);
            const float got = logits[static_cast<size_t>(t * e + x)];
            if (!half) {
                QVERIFY2(std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(want)
                        || (std::isnan(got) && std::isnan(want)),
                    qPrintable(QStringLiteral("logit %1,%2").arg(t).arg(x)));
                continue;
            }
            const float rounded = halfToFloat(floatToHalf(want));
            QVERIFY(std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(rounded)
                || (std::isnan(got) && std::isnan(want)));
            // Half precision: relative error 2^-11 for normals, 2^-25 absolute below 2^-14.
            if (std::isfinite(want) && std::fabs(want) < 65504.0f)
                QVERIFY(std::fabs(got - want) <= std::fabs(want) * 0x1p-11f + 0x1p-25f);
        }
    }
    const std::vector<int32_t> ids = atlas.readTopkIds(layer);
    const std::vector<float> weights = atlas.readTopkWeights(layer);
    const std::vector<float> norms = atlas.readExpertNorms(layer);
    QCOMPARE(static_cast<int64_t>(ids.size()), numTokens * k);
    QCOMPARE(static_cast<int64_t>(weights.size()), numTokens * k);
    QCOMPARE(norms.empty(), !atlas.options().storeExpertNorms);
    for (int64_t t = 0; t < numTokens; ++t) {
        for (int j = 0; j < k; ++j) {
            const auto i = static_cast<size_t>(t * k + j);
            QCOMPARE(ids[i], testTopkId(layer, t, j, e));
            QCOMPARE(weights[i], testTopkWeight(t, j));
            if (!norms.empty())
                QCOMPARE(norms[i], testExpertNorm(layer, t, j));
        }
    }
}

void verifyMetadata(const AtlasFile& atlas, const AtlasTestData& d)
{
    const AtlasModelInfo& m = atlas.model();
    QCOMPARE(m.checkpointPath, d.model.checkpointPath);
    QCOMPARE(m.configSha256, d.model.configSha256);
    QCOMPARE(m.modelType, d.model.modelType);
    QCOMPARE(m.numLayers, d.model.numLayers);
    QCOMPARE(m.moeLayers, d.model.moeLayers);
    QCOMPARE(m.numExperts, d.model.numExperts);
    QCOMPARE(m.topK, d.model.topK);
    QCOMPARE(m.hiddenSize, d.model.hiddenSize);
    QCOMPARE(m.configJson, d.model.configJson);
    const AtlasCalibration& c = atlas.calibration();
    QCOMPARE(c.seqLen, d.calibration.seqLen);
    QCOMPARE(c.seed, d.calibration.seed);
    QCOMPARE(c.packing, d.calibration.packing);
    QCOMPARE(c.device, d.calibration.device);
    QCOMPARE(c.computeDtype, d.calibration.computeDtype);
    QCOMPARE(c.domains.size(), d.calibration.domains.size());
    for (size_t i = 0; i < c.domains.size(); ++i) {
        QCOMPARE(c.domains[i].name, d.calibration.domains[i].name);
        QCOMPARE(c.domains[i].source, d.calibration.domains[i].source);
        QCOMPARE(c.domains[i].format, d.calibration.domains[i].format);
        QCOMPARE(c.domains[i].numSamples, d.calibration.domains[i].numSamples);
        QCOMPARE(c.domains[i].numTokens, d.calibration.domains[i].numTokens);
    }
    QCOMPARE(atlas.numTokens(), static_cast<int64_t>(d.tokens.size()));
    QCOMPARE(atlas.tokens(), d.tokens);
    QCOMPARE(atlas.domainIds(), d.domainIds);
    QCOMPARE(atlas.seqOffsets(), d.seqOffsets);
}

// Creates a plain HDF5 file with one group and no atlas attributes.
void writeForeignHdf5(const fs::path& path)
{
    const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    QVERIFY(file >= 0);
    const hid_t group = H5Gcreate2(file, "data", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(group);
    H5Fclose(file);
}

} // namespace

class TstAtlasFile : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void halfConversionTable_data();
    void halfConversionTable();
    void halfRoundTripsEveryValue();
    void roundTrip_data();
    void roundTrip();
    void partialFileAndResume();
    void resumeRefusesAnotherModel();
    void killedCaptureLeavesValidPartial_data();
    void killedCaptureLeavesValidPartial();
    void unwritableOutput();
    void foreignFilesAreRefused();
    void writerMisuseIsReported();
};

void TstAtlasFile::halfConversionTable_data()
{
    QTest::addColumn<float>("value");
    QTest::addColumn<int>("bits");
    const float inf = std::numeric_limits<float>::infinity();
    QTest::newRow("zero") << 0.0f << 0x0000;
    QTest::newRow("-0") << -0.0f << 0x8000;
    QTest::newRow("one") << 1.0f << 0x3c00;
    QTest::newRow("-2") << -2.0f << 0xc000;
    QTest::newRow("0.1") << 0.1f << 0x2e66;
    QTest::newRow("max 65504") << 65504.0f << 0x7bff;
    QTest::newRow("65519 rounds down") << 65519.0f << 0x7bff;
    QTest::newRow("65520 overflows") << 65520.0f << 0x7c00;
    QTest::newRow("70000 overflows") << 70000.0f << 0x7c00;
    QTest::newRow("inf") << inf << 0x7c00;
    QTest::newRow("-inf") << -inf << 0xfc00;
    QTest::newRow("smallest normal 2^-14") << 0x1p-14f << 0x0400;
    QTest::newRow("largest subnormal") << 1023.0f * 0x1p-24f << 0x03ff;
    QTest::newRow("subnormal rounds up to normal") << 0x1p-14f - 0x1p-26f << 0x0400;
    QTest::newRow("smallest subnormal 2^-24") << 0x1p-24f << 0x0001;
    QTest::newRow("3e-5 subnormal") << 3e-5f << 0x01f7;
    QTest::newRow("1e-7 subnormal") << 1e-7f << 0x0002;
    QTest::newRow("1e-8 underflows") << 1e-8f << 0x0000;
    QTest::newRow("-1e-8 underflows to -0") << -1e-8f << 0x8000;
    QTest::newRow("2^-25 tie to even 0") << 0x1p-25f << 0x0000;
    QTest::newRow("0.75*2^-24 rounds up") << 0x1.8p-25f << 0x0001;
    QTest::newRow("1.5*2^-24 tie to even 2") << 0x1.8p-24f << 0x0002;
    QTest::newRow("1+2^-11 tie to even") << 1.0f + 0x1p-11f << 0x3c00;
    QTest::newRow("1+3*2^-11 tie to even") << 1.0f + 3 * 0x1p-11f << 0x3c02;
    QTest::newRow("float subnormal") << 1e-40f << 0x0000;
}

void TstAtlasFile::halfConversionTable()
{
    QFETCH(float, value);
    QFETCH(int, bits);
    QCOMPARE(static_cast<int>(floatToHalf(value)), bits);
}

void TstAtlasFile::halfRoundTripsEveryValue()
{
    for (uint32_t h = 0; h <= 0xffff; ++h) {
        const auto half = static_cast<uint16_t>(h);
        const float f = halfToFloat(half);
        if ((half & 0x7c00) == 0x7c00 && (half & 0x03ff) != 0) {
            QVERIFY(std::isnan(f));
            QVERIFY(std::isnan(halfToFloat(floatToHalf(f))));
            continue;
        }
        QCOMPARE(static_cast<uint32_t>(floatToHalf(f)), h);
    }
    QCOMPARE(halfToFloat(0x7bff), 65504.0f);
    QCOMPARE(halfToFloat(0x0001), 0x1p-24f);
    QCOMPARE(halfToFloat(0x03ff), 1023.0f * 0x1p-24f);
    QVERIFY(std::signbit(halfToFloat(0x8000)) && halfToFloat(0x8000) == 0.0f);
    QVERIFY(std::isinf(halfToFloat(0xfc00)) && halfToFloat(0xfc00) < 0);
    QCOMPARE(static_cast<int>(floatToHalf(std::numeric_limits<float>::quiet_NaN())), 0x7e00);
}

void TstAtlasFile::roundTrip_data()
{
    QTest::addColumn<bool>("half");
    QTest::addColumn<bool>("norms");
    QTest::addColumn<int>("gzip");
    QTest::newRow("fp32, norms, gzip 4") << false << true << 4;
    QTest::newRow("fp16, gzip 1") << true << false << 1;
    QTest::newRow("fp32, uncompressed") << false << false << 0;
}

void TstAtlasFile::roundTrip()
{
    QFETCH(bool, half);
    QFETCH(bool, norms);
    QFETCH(int, gzip);
    QTemporaryDir dir;
    const fs::path path = tempPath(dir, "run.atlas.h5");
    const AtlasTestData d = makeTestData();
    AtlasCreateOptions options;
    options.logitStorage = half ? LogitStorage::Float16 : LogitStorage::Float32;
    options.storeExpertNorms = norms;
    options.hiddenSampleCount = 4;
    options.compressionLevel = gzip;
    {
        AtlasFile atlas = createTestAtlas(path, d, options);
        QCOMPARE(atlas.path(), fs::path(path.string() + ".partial"));
        QVERIFY(fs::exists(atlas.path()));
        QVERIFY(!fs::exists(path));
        // Layer 3 first, blocks shuffled and not aligned to the 1024-token chunks.
        writeTestLayer(atlas, 3, 300, 11);
        writeTestHiddenSamples(atlas, 3);
        atlas.markLayerComplete(3);
        QCOMPARE(atlas.completedLayers(), std::vector<int> { 3 });
        writeTestLayer(atlas, 1, 1100, 5);
        writeTestHiddenSamples(atlas, 1);
        writeTestHiddenSamples(atlas, 1); // replaces, does not fail
        atlas.markLayerComplete(1);
        atlas.markLayerComplete(1); // idempotent
        QCOMPARE(atlas.completedLayers(), (std::vector<int> { 1, 3 }));
        atlas.finalize();
        QCOMPARE(atlas.path(), path);
        QVERIFY(atlas.isComplete());
        QVERIFY(contains(errorOf([&] { atlas.readLogits(1); }), "closed"));
    }
    QVERIFY(fs::exists(path));
    QVERIFY(!fs::exists(path.string() + ".partial"));

    const AtlasFile atlas = AtlasFile::openReadOnly(path);
    QVERIFY(atlas.isComplete());
    verifyMetadata(atlas, d);
    QCOMPARE(atlas.options().logitStorage, options.logitStorage);
    QCOMPARE(atlas.options().storeExpertNorms, norms);
    QCOMPARE(atlas.options().hiddenSampleCount, 4);
    QCOMPARE(atlas.options().compressionLevel, gzip);
    QCOMPARE(atlas.completedLayers(), (std::vector<int> { 1, 3 }));
    verifyLayer(atlas, 1, half);
    verifyLayer(atlas, 3, half);

    const std::vector<float> rows = atlas.readLogits(3, 1000, 50);
    const std::vector<float> all = atlas.readLogits(3);
    QVERIFY(std::equal(rows.begin(), rows.end(), all.begin() + 1000 * 8));

    const AtlasHiddenSamples samples = atlas.readHiddenSamples(1);
    QCOMPARE(samples.tokenIndices, testHiddenIndices(atlas.numTokens()));
    QCOMPARE(samples.values.size(), samples.tokenIndices.size() * 16);
    for (size_t i = 0; i < samples.tokenIndices.size(); ++i)
        for (int64_t h = 0; h < 16; ++h)
            QCOMPARE(samples.values[i * 16 + static_cast<size_t>(h)], testHiddenValue(1, static_cast<int64_t>(i), h));
    if (half) {
        // The special values of token 0, layer 1, as the conversion table says.
        QCOMPARE(all.size(), size_t(2500 * 8));
        const std::vector<float> first = atlas.readLogits(1, 0, 1);
        QCOMPARE(first[0], 65504.0f);
        QVERIFY(std::isinf(first[1]) && first[1] > 0);
        QVERIFY(first[2] == 0.0f && !std::signbit(first[2]));
        QVERIFY(first[3] == 0.0f && std::signbit(first[3]));
        QVERIFY(std::isinf(first[4]) && std::isinf(first[5]) && first[5] < 0);
        QVERIFY(std::isnan(first[6]));
        QCOMPARE(first[7], 503.0f * 0x1p-24f);
    }
}

void TstAtlasFile::partialFileAndResume()
{
    QTemporaryDir dir;
    const fs::path path = tempPath(dir, "resume.h5");
    const fs::path partial = path.string() + ".partial";
    const AtlasTestData d = makeTestData();
    AtlasCreateOptions options;
    options.storeExpertNorms = true;
    {
        AtlasFile atlas = createTestAtlas(path, d, options);
        writeTestLayer(atlas, 1);
        atlas.markLayerComplete(1);
        // Half of layer 3, never marked complete: resume must not count it.
        const TestBlock block = makeTestBlock(d.model, 3, 0, 1000, true);
        atlas.writeRouterBlock(block.block);
    } // destroyed without finalize()
    QVERIFY(fs::exists(partial));
    QVERIFY(!fs::exists(path));

    {
        // A partial atlas is readable; only completed layers are meaningful.
        const AtlasFile reader = AtlasFile::openReadOnly(partial);
        QVERIFY(!reader.isComplete());
        QCOMPARE(reader.completedLayers(), std::vector<int> { 1 });
        verifyLayer(reader, 1, false);
    }

    AtlasFile atlas = AtlasFile::openForResume(path, d.model, d.tokens);
    QCOMPARE(atlas.completedLayers(), std::vector<int> { 1 });
    QVERIFY(!atlas.isComplete());
    verifyMetadata(atlas, d);
    QCOMPARE(atlas.options().storeExpertNorms, true);
    QVERIFY(contains(errorOf([&] { atlas.finalize(); }), "not complete: 3"));
    // The unfinished layer was emptied: its 1000 written tokens are gone (fill value 0).
    const std::vector<float> emptied = atlas.readLogits(3, 0, 1000);
    QVERIFY(std::all_of(emptied.begin(), emptied.end(), [](float v) { return v == 0.0f; }));
    writeTestLayer(atlas, 3);
    atlas.markLayerComplete(3);
    atlas.finalize();
    QVERIFY(fs::exists(path));
    QVERIFY(!fs::exists(partial));

    const AtlasFile done = AtlasFile::openReadOnly(path);
    QVERIFY(done.isComplete());
    verifyLayer(done, 1, false);
    verifyLayer(done, 3, false);

    // Nothing left to resume: the message says the atlas is already complete.
    const std::string message = errorOf<InputError>([&] { AtlasFile::openForResume(path); });
    QVERIFY2(contains(message, "no partial atlas") && contains(message, "already complete"), message.c_str());
}

void TstAtlasFile::resumeRefusesAnotherModel()
{
    QTemporaryDir dir;
    const fs::path path = tempPath(dir, "other.h5");
    const AtlasTestData d = makeTestData();
    createTestAtlas(path, d, {});
    AtlasModelInfo other = d.model;
    other.configSha256 = "00";
    std::string message = errorOf<InputError>([&] { AtlasFile::openForResume(path, other, d.tokens); });
    QVERIFY2(contains(message, "config_sha256") && contains(message, "other.h5.partial"), message.c_str());
    std::vector<int32_t> tokens = d.tokens;
    tokens[42] += 1;
    message = errorOf<InputError>([&] { AtlasFile::openForResume(path, d.model, tokens); });
    QVERIFY2(contains(message, "calibration tokens"), message.c_str());
    QVERIFY(errorOf([&] { AtlasFile::openForResume(path, d.model, d.tokens); }).empty());
}

void TstAtlasFile::killedCaptureLeavesValidPartial_data()
{
    QTest::addColumn<bool>("half");
    QTest::addColumn<int>("completeBeforeKill");
    QTest::newRow("fp32, killed in 2nd layer") << false << 1;
    QTest::newRow("fp16, killed in 2nd layer") << true << 1;
    QTest::newRow("killed in 1st layer") << false << 0;
}

void TstAtlasFile::killedCaptureLeavesValidPartial()
{
    QFETCH(bool, half);
    QFETCH(int, completeBeforeKill);
    QTemporaryDir dir;
    const fs::path path = tempPath(dir, "killed.h5");
    // Big enough (E = 64, 16k tokens, 4 MiB of fp32 logits per layer) that the chunk cache
    // spills and HDF5 writes raw data and chunk index nodes after the last flush.
    const AtlasTestData d = makeTestData(1024, 16, 64, 4);
    AtlasCreateOptions options;
    options.logitStorage = half ? LogitStorage::Float16 : LogitStorage::Float32;
    options.storeExpertNorms = true;

    const pid_t child = ::fork();
    QVERIFY(child >= 0);
    if (child == 0) {
        // The child is the capture: it dies with _exit, so no destructor or HDF5 atexit runs.
        try {
            AtlasFile atlas = createTestAtlas(path, d, options);
            if (completeBeforeKill > 0) {
                writeTestLayer(atlas, 1, 512);
                atlas.markLayerComplete(1);
            }
            const int layer = completeBeforeKill > 0 ? 3 : 1;
            for (int64_t begin = 0; begin < atlas.numTokens() * 3 / 4; begin += 512) {
                const TestBlock block = makeTestBlock(d.model, layer, begin, 512, true);
                atlas.writeRouterBlock(block.block);
            }
            writeTestHiddenSamples(atlas, layer);
            ::_exit(9);
        } catch (...) {
            ::_exit(2);
        }
    }
    int status = 0;
    QCOMPARE(::waitpid(child, &status, 0), child);
    QVERIFY(WIFEXITED(status));
    QCOMPARE(WEXITSTATUS(status), 9);
    QVERIFY(fs::exists(path.string() + ".partial"));
    QVERIFY(!fs::exists(path));

    const std::vector<int> expected = completeBeforeKill > 0 ? std::vector<int> { 1 } : std::vector<int> {};
    {
        const AtlasFile reader = AtlasFile::openReadOnly(path.string() + ".partial");
        QCOMPARE(reader.completedLayers(), expected);
        verifyMetadata(reader, d);
        if (completeBeforeKill > 0)
            verifyLayer(reader, 1, half);
    }
    // The capture can be finished from where it stopped.
    AtlasFile atlas = AtlasFile::openForResume(path, d.model, d.tokens);
    QCOMPARE(atlas.completedLayers(), expected);
    for (int layer : d.model.moeLayers) {
        if (std::find(expected.begin(), expected.end(), layer) != expected.end())
            continue;
        writeTestLayer(atlas, layer, 512);
        atlas.markLayerComplete(layer);
    }
    atlas.finalize();
    const AtlasFile done = AtlasFile::openReadOnly(path);
    verifyLayer(done, 1, half);
    verifyLayer(done, 3, half);
}

void TstAtlasFile::unwritableOutput()
{
    QTemporaryDir dir;
    const AtlasTestData d = makeTestData();
    const fs::path missingDir = tempPath(dir, "no-such-dir") / "run.h5";
    std::string message = errorOf<InputError>([&] { createTestAtlas(missingDir, d, {}); });
    QVERIFY2(contains(message, "no-such-dir") && contains(message, "does not exist"), message.c_str());

    const fs::path file = tempPath(dir, "plain-file");
    std::ofstream(file) << "x";
    message = errorOf<InputError>([&] { createTestAtlas(file / "run.h5", d, {}); });
    QVERIFY2(contains(message, "plain-file"), message.c_str());

    // Permissions only bind non-root users; root writes anywhere.
    if (::geteuid() != 0) {
        const fs::path locked = tempPath(dir, "locked");
        fs::create_directory(locked);
        fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
        message = errorOf<InputError>([&] { createTestAtlas(locked / "run.h5", d, {}); });
        fs::permissions(locked, fs::perms::owner_all);
        QVERIFY2(contains(message, "not writable"), message.c_str());
    }
}

void TstAtlasFile::foreignFilesAreRefused()
{
    QTemporaryDir dir;
    std::string message = errorOf<InputError>([&] { AtlasFile::openReadOnly(tempPath(dir, "missing.h5")); });
    QVERIFY2(contains(message, "missing.h5") && contains(message, "no such file"), message.c_str());

    const fs::path text = tempPath(dir, "notes.txt");
    std::ofstream(text) << "not an HDF5 file\n";
    message = errorOf<InputError>([&] { AtlasFile::openReadOnly(text); });
    QVERIFY2(contains(message, "notes.txt") && contains(message, "not an HDF5 file"), message.c_str());

    const fs::path foreign = tempPath(dir, "foreign.h5");
    writeForeignHdf5(foreign);
    message = errorOf<InputError>([&] { AtlasFile::openReadOnly(foreign); });
    QVERIFY2(contains(message, "foreign.h5") && contains(message, "not a MoE Atlas file"), message.c_str());

    // An atlas with a dataset removed: the message names the HDF5 object.
    const fs::path broken = tempPath(dir, "broken.h5");
    const AtlasTestData d = makeTestData();
    createTestAtlas(broken, d, {});
    const fs::path partial = broken.string() + ".partial";
    const hid_t file = H5Fopen(partial.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    QVERIFY(file >= 0);
    QVERIFY(H5Ldelete(file, "/model/moe_layers", H5P_DEFAULT) >= 0);
    QVERIFY(H5Ldelete(file, "/layers/3/topk_ids", H5P_DEFAULT) >= 0);
    H5Fclose(file);
    message = errorOf<InputError>([&] { AtlasFile::openReadOnly(partial); });
    QVERIFY2(contains(message, "broken.h5.partial") && contains(message, "/model/moe_layers"), message.c_str());
}

void TstAtlasFile::writerMisuseIsReported()
{
    QTemporaryDir dir;
    const fs::path path = tempPath(dir, "misuse.h5");
    const AtlasTestData d = makeTestData();
    AtlasFile atlas = createTestAtlas(path, d, {});

    TestBlock block = makeTestBlock(d.model, 2, 0, 10, false);
    std::string message = errorOf([&] { atlas.writeRouterBlock(block.block); });
    QVERIFY2(contains(message, "layer 2 is not a MoE layer") && contains(message, "1, 3"), message.c_str());
    block = makeTestBlock(d.model, 1, 2495, 10, false);
    message = errorOf([&] { atlas.writeRouterBlock(block.block); });
    QVERIFY2(contains(message, "outside [0, 2500)"), message.c_str());
    block = makeTestBlock(d.model, 1, 0, 10, false);
    block.ids[3] = 8;
    message = errorOf([&] { atlas.writeRouterBlock(block.block); });
    QVERIFY2(contains(message, "expert id 8"), message.c_str());
    atlas.markLayerComplete(1);
    block = makeTestBlock(d.model, 1, 0, 10, false);
    message = errorOf([&] { atlas.writeRouterBlock(block.block); });
    QVERIFY2(contains(message, "already marked complete"), message.c_str());
    message = errorOf([&] { atlas.finalize(); });
    QVERIFY2(contains(message, "misuse.h5.partial") && contains(message, "not complete: 3"), message.c_str());
    message = errorOf<InputError>([&] { atlas.readTopkIds(0); });
    QVERIFY2(contains(message, "not a MoE layer"), message.c_str());

    // Invalid create arguments are refused before anything is written.
    AtlasTestData bad = makeTestData();
    bad.seqOffsets.back() = 7;
    message = errorOf<InputError>([&] { createTestAtlas(tempPath(dir, "bad.h5"), bad, {}); });
    QVERIFY2(contains(message, "bad.h5") && contains(message, "sequence offsets"), message.c_str());
    QVERIFY(!fs::exists(tempPath(dir, "bad.h5.partial")));

    AtlasFile reader = AtlasFile::openReadOnly(atlas.path());
    block = makeTestBlock(d.model, 3, 0, 10, false);
    message = errorOf([&] { reader.writeRouterBlock(block.block); });
    QVERIFY2(contains(message, "read-only"), message.c_str());
}

QTEST_GUILESS_MAIN(TstAtlasFile)
#include "tst_atlas_file.moc"
