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
