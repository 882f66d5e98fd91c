// Integrity of stored atlases (docs/atlas-format.md, "Integrity"):
// - every dataset the C++ side creates carries HDF5's Fletcher-32 checksum, compressed or not,
//   including the ones that used to be contiguous (tokens/seq_offsets, prefetch vectors, results);
// - one flipped byte inside a stored chunk is an InputError naming the file and the dataset, from
//   the reader and from a CLI command (exit 1, the atlas unchanged, nothing written beside it);
// - atlases written before the checksum (the committed demo atlas) still open and read;
// - h5py reads every dataset of a fresh atlas (h5pyReadsEveryDataset, label reference).
#include "atlas/atlas_file.h"
#include "atlas_damage.h"
#include "atlas_test_data.h"
#include "test_support.h"
#include "util/sha256.h"

#include <QDir>
#include <QTemporaryDir>
#include <QTest>

#include <hdf5.h>

#include <filesystem>
#include <set>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;

namespace {

// A complete atlas with every kind of dataset the C++ writer makes: layers (with norms), hidden
// samples, prefetch ids, default vectors, a learned estimator, and a results group (via an update).
fs::path writeFullAtlas(const fs::path& dir, const std::string& name, int compressionLevel)
{
    const AtlasTestData d = makeTestData();
    AtlasCreateOptions options;
    options.storeExpertNorms = true;
    options.hiddenSampleCount = 4;
    options.compressionLevel = compressionLevel;
    const fs::path path = dir / name;
    {
        AtlasFile atlas = AtlasFile::create(path, d.model, d.calibration, d.tokens, d.domainIds, d.seqOffsets, options);
        AtlasPrefetchInfo info;
        info.predictors = { "next-router" };
        info.maxLookahead = 1;
        info.budget = 2;
        info.trainFraction = 0.5;
        info.splitSeed = 1;
        info.trainSequences = { 1, 0, 1, 0, 1 };
        atlas.createPrefetch(info);
        const auto numTokens = static_cast<int64_t>(d.tokens.size());
        std::vector<int32_t> ids;
        for (int64_t t = 0; t < numTokens; ++t)
            for (int i = 0; i < info.budget; ++i)
                ids.push_back(static_cast<int32_t>((t + i) % 8));
        atlas.writePrefetchBlock("next-router", 1, 1, 0, numTokens, ids.data());
        for (int layer : d.model.moeLayers) {
            std::vector<float> values(static_cast<std::size_t>(8 * d.model.hiddenSize), 0.5f);
            std::vector<int64_t> counts(8, 3);
            atlas.writeDefaultVectors(layer, values, counts);
        }
        AtlasLearnedEstimator est;
        est.parameters.push_back({ "bias", { 8 }, { 1, 2, 3, 4, 5, 6, 7, 8 } });
        est.epochs = 1;
        atlas.writeLearnedEstimator("linear", 1, 1, est);
        for (int layer : d.model.moeLayers) {
            writeTestLayer(atlas, layer);
            writeTestHiddenSamples(atlas, layer);
            atlas.markLayerComplete(layer);
        }
        atlas.finalize();
    }
    {
        AtlasFile atlas = AtlasFile::openForUpdate(path);
        AtlasResults r;
        r.paramsJson = R"({"tag": "integrity"})";
        r.inputsHash = "integrity";
        r.arrays.push_back({ "value", { 2, 3 }, { 1, 2, 3, 4, 5, 6 } });
        atlas.writeResults("scores", r);
        atlas.commitUpdate();
    }
    return path;
}

struct DatasetList {
    std::vector<std::string> chunkedWithFletcher, withoutFletcher;
    std::vector<std::string> scalar; // scalar or variable-length strings: no checksum possible
};

DatasetList listDatasets(const fs::path& path)
{
    DatasetList list;
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    H5Ovisit2(
        file, H5_INDEX_NAME, H5_ITER_INC,
        [](hid_t root, const char* name, const H5O_info_t* info, void* out) -> herr_t {
            if (info->type != H5O_TYPE_DATASET)
                return 0;
            auto& l = *static_cast<DatasetList*>(out);
            const hid_t d = H5Dopen2(root, name, H5P_DEFAULT);
            const hid_t space = H5Dget_space(d);
            const std::string path = std::string("/") + name;
            const hid_t type = H5Dget_type(d);
            if (H5Sget_simple_extent_type(space) == H5S_SCALAR || H5Tis_variable_str(type) > 0)
                l.scalar.push_back(path);
            else if (hasFletcher32(d))
                l.chunkedWithFletcher.push_back(path);
            else
                l.withoutFletcher.push_back(path);
            H5Tclose(type);
            H5Sclose(space);
            H5Dclose(d);
            return 0;
        },
        &list, H5O_INFO_BASIC);
    H5Fclose(file);
    return list;
}

// Reads every dataset the reader offers (tokens, layers, hidden samples, prefetch, results).
void readEverything(const fs::path& path)
{
    const AtlasFile atlas = AtlasFile::openReadOnly(path);
    (void)atlas.tokens();
    (void)atlas.domainIds();
    (void)atlas.seqOffsets();
    for (int layer : atlas.model().moeLayers) {
        (void)atlas.readLogits(layer);
        (void)atlas.readTopkIds(layer);
        (void)atlas.readTopkWeights(layer);
        (void)atlas.readExpertNorms(layer);
        (void)atlas.readHiddenSamples(layer);
        (void)atlas.readDefaultVectors(layer);
    }
    (void)atlas.readPrefetchIds("next-router", 1, 1);
    (void)atlas.readResults("scores");
}

QString demoAtlas()
{
    return sourcePath(QStringLiteral("resources/demo/demo.atlas.h5"));
}

} // namespace

class TstAtlasIntegrity : public QObject {
    Q_OBJECT

    QTemporaryDir m_dir;
    fs::path root() const { return m_dir.path().toStdString(); }

private Q_SLOTS:
    void initTestCase() { QVERIFY(m_dir.isValid()); }

    // Every dataset is chunked with Fletcher-32, compressed (gzip 4) or not (level 0), except the
    // variable-length strings (/model/config_json, a scalar; the domain tables): HDF5 refuses the
    // filter for them (docs/atlas-format.md, "Integrity").
    void everyDatasetIsChecksummed_data()
    {
        QTest::addColumn<int>("gzip");
        QTest::newRow("gzip 4") << 4;
        QTest::newRow("uncompressed") << 0;
    }

    void everyDatasetIsChecksummed()
    {
        QFETCH(int, gzip);
        const fs::path path = writeFullAtlas(root(), "checked-" + std::to_string(gzip) + ".h5", gzip);
        const DatasetList list = listDatasets(path);
        QVERIFY2(list.withoutFletcher.empty(), list.withoutFletcher.empty() ? "" : list.withoutFletcher[0].c_str());
        QCOMPARE(list.scalar,
            (std::vector<std::string> { "/calibration/domains/format", "/calibration/domains/name",
                "/calibration/domains/source", "/model/config_json" }));
        const std::set<std::string> names(list.chunkedWithFletcher.begin(), list.chunkedWithFletcher.end());
        // The formerly contiguous ones are among them.
        for (const char* p : { "/tokens/seq_offsets", "/tokens/ids", "/layers/1/router_logits",
                 "/layers/3/hidden_samples/values", "/scores/value" })
            QVERIFY2(names.count(p) == 1, p);
        QVERIFY(list.chunkedWithFletcher.size() >= 20);
        readEverything(path); // and the checksums of an undamaged file all pass
    }

    // One flipped byte in a stored chunk -> InputError naming the file, the dataset and the checksum.
    void flippedByteNamesTheDataset_data()
    {
        QTest::addColumn<int>("gzip");
        QTest::addColumn<QString>("dataset");
        for (int gzip : { 4, 0 })
            for (const char* d : { "/tokens/seq_offsets", "/tokens/ids", "/layers/1/router_logits",
                     "/layers/3/topk_weights", "/layers/1/hidden_samples/values", "/scores/value" })
                QTest::addRow("gzip %d %s", gzip, d) << gzip << QString::fromLatin1(d);
    }

    void flippedByteNamesTheDataset()
    {
        QFETCH(int, gzip);
        QFETCH(QString, dataset);
        const std::string name = "damaged-" + std::to_string(gzip) + "-" + std::to_string(qHash(dataset)) + ".h5";
        const fs::path path = writeFullAtlas(root(), name, gzip);
        QVERIFY(flipChunkByte(path, dataset.toStdString()));
        const std::string message = errorOf<InputError>([&] { readEverything(path); });
        QVERIFY2(contains(message, path.string()), message.c_str());
        QVERIFY2(contains(message, dataset.toStdString()), message.c_str());
        QVERIFY2(contains(message, "checksum"), message.c_str());
    }

    // Atlases written before the checksum (the committed demo atlas: no filter on
    // /tokens/seq_offsets) still open and read.
    void atlasWithoutChecksumsStillOpens()
    {
        const fs::path demo = demoAtlas().toStdString();
        const DatasetList list = listDatasets(demo);
        if (list.withoutFletcher.empty())
            QSKIP("the demo atlas was regenerated with checksums: nothing old to open");
        const AtlasFile atlas = AtlasFile::openReadOnly(demo);
        QVERIFY(atlas.isComplete());
        QCOMPARE(atlas.seqOffsets().back(), atlas.numTokens());
        for (int layer : atlas.model().moeLayers)
            QCOMPARE(
                atlas.readLogits(layer).size(), static_cast<std::size_t>(atlas.numTokens() * atlas.model().numExperts));
    }

    // The CLI on a damaged real atlas (a merge of the demo atlas with itself, written by this
    // build): exit 1, the message names the file and the dataset, the atlas is unchanged, no file
    // appears beside it.
    void cliRefusesDamagedAtlas()
    {
        if (cliExecutable().isEmpty())
            QSKIP("MOEATLAS_CLI is not set (run through ctest)");
        const QString dir = m_dir.filePath(QStringLiteral("cli"));
        QVERIFY(QDir().mkpath(dir));
        const QString atlas = dir + QStringLiteral("/merged.atlas.h5");
        const auto merged = runCli({ QStringLiteral("merge"), demoAtlas(), demoAtlas(), QStringLiteral("-o"), atlas });
        QVERIFY2(merged.exitCode == 0, qPrintable(merged.stdErr));
        QVERIFY(listDatasets(atlas.toStdString()).withoutFletcher.empty());
        // topk_ids: read by both commands (simulate reads no logits).
        QVERIFY(flipChunkByte(atlas.toStdString(), "/layers/1/topk_ids", 1));
        const std::string before = sha256File(atlas.toStdString());
        const QStringList filesBefore = QDir(dir).entryList(QDir::Files | QDir::Hidden);
        for (const QStringList& args : { QStringList { QStringLiteral("score"), atlas },
                 QStringList { QStringLiteral("simulate"), atlas, QStringLiteral("--cache-slots"), QStringLiteral("8"),
                     QStringLiteral("--csv"), dir + QStringLiteral("/sim.csv") } }) {
            const auto r = runCli(args);
            QCOMPARE(r.exitCode, 1);
            QVERIFY2(r.stdErr.contains(atlas) && r.stdErr.contains(QStringLiteral("/layers/1/topk_ids"))
                    && r.stdErr.contains(QStringLiteral("checksum")),
                qPrintable(r.stdErr));
            QCOMPARE(sha256File(atlas.toStdString()), before);
            QCOMPARE(QDir(dir).entryList(QDir::Files | QDir::Hidden), filesBefore);
        }
    }

    // h5py (the reference venv) reads every dataset of a fresh atlas and sees the checksum on each
    // non-scalar one; its tokens and offsets equal ours.
    void h5pyReadsEveryDataset()
    {
        if (pythonExecutable().isEmpty() || qEnvironmentVariableIsSet("MOEATLAS_SKIP_H5PY"))
            QSKIP("reference Python not configured (the _h5py entry runs this)");
        const fs::path path = writeFullAtlas(root(), "h5py.h5", 4);
        const auto r
            = runPython(QStringLiteral("tests/atlas/read_every_dataset.py"), { QString::fromStdString(path.string()) });
        QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
        const AtlasFile atlas = AtlasFile::openReadOnly(path);
        int64_t tokenSum = 0;
        for (int32_t t : atlas.tokens())
            tokenSum += t;
        const DatasetList list = listDatasets(path);
        const auto datasets = static_cast<int64_t>(list.chunkedWithFletcher.size() + list.scalar.size());
        QVERIFY2(r.stdOut.contains(QStringLiteral("datasets %1\n").arg(datasets)), qPrintable(r.stdOut));
        QVERIFY2(r.stdOut.contains(QStringLiteral("/tokens/ids sum %1\n").arg(tokenSum)), qPrintable(r.stdOut));
        QVERIFY2(r.stdOut.contains(QStringLiteral("/tokens/seq_offsets last %1\n").arg(atlas.seqOffsets().back())),
            qPrintable(r.stdOut));
    }
};

QTEST_GUILESS_MAIN(TstAtlasIntegrity)
#include "tst_atlas_integrity.moc"
