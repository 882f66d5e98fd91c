// Unit tests of AtlasFile::openForUpdate / commitUpdate (docs/atlas-format.md, "Updates"):
// - the update's file has a unique name beside the atlas and goes away on abort;
// - updates take turns on <atlas>.lock: a second one waits, times out naming the holder, or stops
//   when its callback says so; one that waited sees what the first committed; a capture's
//   finalize() waits too; a killed holder (SIGKILL) blocks no one and its file is cleaned up;
// - commit merges the atlas around what the update wrote and leaves no dead space (sizes printed),
//   keeps chunking, filters, attributes, permissions and symlinks; <atlas>.partial of an
//   interrupted capture is never touched.
// The executable doubles as the killed holder: `tst_atlas_update --hold-update ATLAS`.
#include "atlas/atlas_file.h"
#include "atlas_test_data.h"
#include "util/error.h"
#include "util/file_lock.h"

#include <QCoreApplication>
#include <QCryptographicHash>
#include <QFile>
#include <QProcess>
#include <QRegularExpression>
#include <QTemporaryDir>
#include <QTest>

#include <hdf5.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace moeatlas;
using namespace moeatlas::test;
using namespace std::chrono_literals;

namespace {

QByteArray fileHash(const fs::path& path)
{
    QFile f(QString::fromStdString(path.string()));
    if (!f.open(QIODevice::ReadOnly))
        return {};
    QCryptographicHash h(QCryptographicHash::Sha256);
    h.addData(&f);
    return h.result().toHex();
}

// Names in `dir`, sorted, with the update's random suffix replaced by XXXXXX.
QStringList entries(const fs::path& dir)
{
    QStringList names;
    for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
        QString name = QString::fromStdString(e.path().filename().string());
        name.replace(QRegularExpression(QStringLiteral("\\.update-[A-Za-z0-9]{6}$")), QStringLiteral(".update-XXXXXX"));
        names << name;
    }
    names.sort();
    return names;
}

// A complete atlas of makeTestData (2 MoE layers, 2500 tokens, gzip 4 chunks).
void makeAtlas(const fs::path& path, int64_t seqLen = 500)
{
    const AtlasTestData d = makeTestData(seqLen);
    AtlasFile atlas = AtlasFile::create(path, d.model, d.calibration, d.tokens, d.domainIds, d.seqOffsets, {});
    for (int layer : d.model.moeLayers) {
        writeTestLayer(atlas, layer);
        atlas.markLayerComplete(layer);
    }
    atlas.finalize();
}

AtlasResults results(const std::string& tag, size_t values = 16)
{
    AtlasResults r;
    r.paramsJson = R"({"tag": ")" + tag + R"("})";
    r.inputsHash = "hash-" + tag;
    std::vector<double> v(values);
    for (size_t i = 0; i < values; ++i)
        v[i] = static_cast<double>(i) + 0.5;
    r.arrays.push_back({ "value", { values }, std::move(v) });
    return r;
}

std::string paramsOf(const AtlasFile& atlas, const std::string& group)
{
    const std::optional<AtlasResults> r = atlas.readResults(group);
    return r ? r->paramsJson : "<absent>";
}

// The routing records of every layer and the tokens, as makeAtlas wrote them (fp32: exact).
void checkRecords(const AtlasFile& atlas)
{
    const AtlasTestData d = makeTestData(atlas.numTokens() / 5);
    QCOMPARE(atlas.tokens(), d.tokens);
    const int e = atlas.model().numExperts;
    for (int layer : atlas.model().moeLayers) {
        const std::vector<float> logits = atlas.readLogits(layer);
        QCOMPARE(static_cast<int64_t>(logits.size()), atlas.numTokens() * e);
        for (int64_t t = 0; t < atlas.numTokens(); ++t)
            for (int x = 0; x < e; ++x) {
                const float want = testLogit(layer, t, x), got = logits[static_cast<size_t>(t * e + x)];
                QVERIFY(std::memcmp(&want, &got, sizeof want) == 0 || (std::isnan(want) && std::isnan(got)));
            }
    }
}

// Chunk dims and filter ids of a dataset, and the root attributes, read with the HDF5 C API.
struct Layout {
    std::vector<hsize_t> chunk;
    std::vector<int> filters;
    std::vector<std::string> rootAttributes;
    bool operator==(const Layout&) const = default;
};

Layout layoutOf(const fs::path& path, const char* dataset)
{
    Layout l;
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t d = H5Dopen2(file, dataset, H5P_DEFAULT);
    const hid_t dcpl = H5Dget_create_plist(d);
    l.chunk.resize(2);
    l.chunk.resize(static_cast<size_t>(std::max(0, H5Pget_chunk(dcpl, 2, l.chunk.data()))));
    for (int i = 0; i < H5Pget_nfilters(dcpl); ++i) {
        unsigned flags = 0;
        size_t n = 0;
        l.filters.push_back(H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &n, nullptr, 0, nullptr, nullptr));
    }
    H5Aiterate2(
        file, H5_INDEX_NAME, H5_ITER_INC, nullptr,
        [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
            static_cast<std::vector<std::string>*>(out)->emplace_back(name);
            return 0;
        },
        &l.rootAttributes);
    H5Pclose(dcpl);
    H5Dclose(d);
    H5Fclose(file);
    return l;
}

// Child mode: takes the update lock of `atlas`, writes a group, says so on stdout, waits to be killed.
int holdUpdate(const char* atlas)
{
    try {
        LockWait wait;
        wait.purpose = "tst_atlas_update helper";
        AtlasFile update = AtlasFile::openForUpdate(atlas, wait);
        update.writeResults("child/result", results("child"));
        std::printf("holding %d\n", static_cast<int>(::getpid()));
        std::fflush(stdout);
        for (;;)
            ::pause();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
}

} // namespace

class TstAtlasUpdate : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void abortRemovesTheUpdateFile();
    void secondUpdateWaitsTimesOutOrStops();
    void waitingUpdateKeepsTheFirstOnesResults();
    void commitMergesAroundWrittenGroups();
    void commitLeavesNoDeadSpace();
    void layoutPermissionsAndSymlinksKept();
    void partialCaptureIsUntouched();
    void killedHolderDoesNotBlock();
    void finalizeWaitsForAnUpdate();
    void updateRefusesCaptureWrites();
};

void TstAtlasUpdate::abortRemovesTheUpdateFile()
{
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), path = dir / "run.atlas.h5";
    makeAtlas(path);
    const QByteArray before = fileHash(path);
    {
        AtlasFile update = AtlasFile::openForUpdate(path);
        update.writeResults("scores/peu", results("peu"));
        QCOMPARE(entries(dir),
            (QStringList { QStringLiteral("run.atlas.h5"), QStringLiteral("run.atlas.h5.lock"),
                QStringLiteral("run.atlas.h5.update-XXXXXX") }));
        QCOMPARE(AtlasFile::lockPathFor(path), fs::path(path.string() + ".lock"));
        const LockHolder holder = FileLock::readHolder(AtlasFile::lockPathFor(path));
        QCOMPARE(holder.pid, static_cast<int64_t>(::getpid()));
        QVERIFY2(contains(holder.purpose, "tst_atlas_update"), holder.purpose.c_str());
        // The update reads back what it wrote before the commit; the atlas itself has not changed.
        QCOMPARE(paramsOf(update, "scores/peu"), results("peu").paramsJson);
        QCOMPARE(paramsOf(AtlasFile::openReadOnly(path), "scores/peu"), std::string("<absent>"));
    }
    QCOMPARE(entries(dir), QStringList { QStringLiteral("run.atlas.h5") });
    QCOMPARE(fileHash(path), before);

    // A failure while writing ends the same way.
    {
        AtlasFile update = AtlasFile::openForUpdate(path);
        AtlasResults bad = results("bad");
        bad.arrays[0].dims = { 3 };
        const std::string message = errorOf([&] { update.writeResults("scores/bad", bad); });
        QVERIFY2(contains(message, "16 values for shape of 3"), message.c_str());
    }
    QCOMPARE(entries(dir), QStringList { QStringLiteral("run.atlas.h5") });
    QCOMPARE(fileHash(path), before);
}

void TstAtlasUpdate::secondUpdateWaitsTimesOutOrStops()
{
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), path = dir / "run.atlas.h5";
    makeAtlas(path);
    LockWait first;
    first.purpose = "first update (scores)";
    AtlasFile update = AtlasFile::openForUpdate(path, first);

    // Waits, reporting the holder, then gives up naming the lock file and the holder.
    LockWait wait;
    wait.timeout = 400ms;
    std::vector<LockHolder> seen;
    wait.onWait = [&](const LockHolder& holder, std::chrono::milliseconds) {
        seen.push_back(holder);
        return true;
    };
    const auto start = std::chrono::steady_clock::now();
    std::string message = errorOf<InputError>([&] { AtlasFile::openForUpdate(path, wait); });
    const auto waited = std::chrono::steady_clock::now() - start;
    qInfo("after %lld ms: %s",
        static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()), message.c_str());
    QVERIFY(waited >= 400ms);
    QVERIFY2(contains(message, path.string() + ".lock") && contains(message, "pid " + std::to_string(::getpid()))
            && contains(message, "first update (scores)") && contains(message, "another update of"),
        message.c_str());
    QVERIFY(!seen.empty());
    QCOMPARE(seen.front().pid, static_cast<int64_t>(::getpid()));
    QCOMPARE(seen.front().purpose, std::string("first update (scores)"));
    QVERIFY(!seen.front().since.empty());

    // Timeout zero: at once. A callback returning false: Cancelled.
    wait.onWait = {};
    wait.timeout = 0ms;
    message = errorOf<InputError>([&] { AtlasFile::openForUpdate(path, wait); });
    QVERIFY2(contains(message, "first update (scores)"), message.c_str());
    wait.timeout = 10min;
    wait.onWait = [](const LockHolder&, std::chrono::milliseconds) { return false; };
    message = errorOf<Cancelled>([&] { AtlasFile::openForUpdate(path, wait); });
    QCOMPARE(message, std::string("cancelled"));

    // None of that left anything behind or took the lock from the holder.
    QCOMPARE(entries(dir),
        (QStringList { QStringLiteral("run.atlas.h5"), QStringLiteral("run.atlas.h5.lock"),
            QStringLiteral("run.atlas.h5.update-XXXXXX") }));
    update.writeResults("scores/peu", results("peu"));
    update.commitUpdate();
    QCOMPARE(entries(dir), QStringList { QStringLiteral("run.atlas.h5") });
    QCOMPARE(paramsOf(update, "scores/peu"), results("peu").paramsJson);
    wait.timeout = 0ms;
    AtlasFile next = AtlasFile::openForUpdate(path, wait); // free again
}

void TstAtlasUpdate::waitingUpdateKeepsTheFirstOnesResults()
{
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), path = dir / "run.atlas.h5";
    makeAtlas(path);
    AtlasFile first = AtlasFile::openForUpdate(path);

    // The second update runs in another thread of this process: its wait must not hold up the
    // first one's HDF5 calls below.
    std::atomic<bool> opened = false;
    std::string seenFirst, failure;
    std::thread second([&] {
        try {
            AtlasFile update = AtlasFile::openForUpdate(path);
            opened = true;
            seenFirst = paramsOf(update, "scores/first");
            update.writeResults("scores/second", results("second"));
            update.commitUpdate();
        } catch (const std::exception& e) {
            failure = e.what();
        }
    });
    std::this_thread::sleep_for(500ms);
    const bool openedEarly = opened;
    first.writeResults("scores/first", results("first"));
    first.writeResults("statistics", results("statistics", 1000));
    first.commitUpdate();
    second.join();
    QVERIFY2(failure.empty(), failure.c_str());
    QVERIFY(!openedEarly);
    QCOMPARE(seenFirst, results("first").paramsJson);

    const AtlasFile atlas = AtlasFile::openReadOnly(path);
    QCOMPARE(atlas.resultGroups("scores"), (std::vector<std::string> { "first", "second" }));
    QCOMPARE(paramsOf(atlas, "scores/first"), results("first").paramsJson);
    QCOMPARE(paramsOf(atlas, "scores/second"), results("second").paramsJson);
    QCOMPARE(atlas.readResults("statistics")->arrays[0].values, results("statistics", 1000).arrays[0].values);
    QCOMPARE(entries(dir), QStringList { QStringLiteral("run.atlas.h5") });
}

void TstAtlasUpdate::commitMergesAroundWrittenGroups()
{
    QTemporaryDir tmp;
    const fs::path path = fs::path(tmp.path().toStdString()) / "run.atlas.h5";
    makeAtlas(path);
    {
        AtlasFile update = AtlasFile::openForUpdate(path);
        update.writeResults("fisher", results("fisher"));
        update.writeResults("fisher/mask", results("mask"));
        update.writeResults("fisher/ablation", results("ablation"));
        update.writeResults("scores/peu", results("peu"));
        update.commitUpdate();
    }
    // Only the ablation below /fisher: /fisher's own arrays, attributes and other groups stay.
    {
        AtlasFile update = AtlasFile::openForUpdate(path);
        update.writeResults("fisher/ablation", results("ablation 2"));
        QCOMPARE(update.resultGroups("fisher"), (std::vector<std::string> { "ablation", "mask" }));
        QCOMPARE(update.resultGroups("scores"), std::vector<std::string> { "peu" });
        QCOMPARE(paramsOf(update, "fisher"), results("fisher").paramsJson);
        QCOMPARE(paramsOf(update, "fisher/ablation"), results("ablation 2").paramsJson);
        update.commitUpdate();
        QCOMPARE(paramsOf(update, "fisher/ablation"), results("ablation 2").paramsJson);
    }
    {
        const AtlasFile atlas = AtlasFile::openReadOnly(path);
        QVERIFY(atlas.isComplete());
        QCOMPARE(atlas.resultGroups("fisher"), (std::vector<std::string> { "ablation", "mask" }));
        const std::optional<AtlasResults> top = atlas.readResults("fisher");
        QCOMPARE(top->paramsJson, results("fisher").paramsJson);
        QCOMPARE(top->inputsHash, std::string("hash-fisher"));
        QCOMPARE(top->arrays[0].values, results("fisher").arrays[0].values);
        QCOMPARE(paramsOf(atlas, "fisher/mask"), results("mask").paramsJson);
        QCOMPARE(paramsOf(atlas, "fisher/ablation"), results("ablation 2").paramsJson);
        QCOMPARE(paramsOf(atlas, "scores/peu"), results("peu").paramsJson);
        checkRecords(atlas);
    }
    // /fisher itself: replaced whole, its old subgroups gone.
    {
        AtlasFile update = AtlasFile::openForUpdate(path);
        update.writeResults("fisher", results("fisher 2"));
        QCOMPARE(update.resultGroups("fisher"), std::vector<std::string> {});
        QCOMPARE(paramsOf(update, "fisher/mask"), std::string("<absent>"));
        update.commitUpdate();
    }
    const AtlasFile atlas = AtlasFile::openReadOnly(path);
    QCOMPARE(atlas.resultGroups("fisher"), std::vector<std::string> {});
    QCOMPARE(paramsOf(atlas, "fisher"), results("fisher 2").paramsJson);
    QCOMPARE(paramsOf(atlas, "scores/peu"), results("peu").paramsJson);
}

void TstAtlasUpdate::commitLeavesNoDeadSpace()
{
    QTemporaryDir tmp;
    const fs::path path = fs::path(tmp.path().toStdString()) / "run.atlas.h5";
    makeAtlas(path);
    const auto update = [&](size_t values) {
        AtlasFile u = AtlasFile::openForUpdate(path);
        u.writeResults("fisher", results("big", values));
        u.commitUpdate();
        return static_cast<qint64>(fs::file_size(path));
    };
    const auto base = static_cast<qint64>(fs::file_size(path));
    // 2 MB of float64 written, then replaced three times by the same size, then by 16 values.
    const qint64 first = update(250000), second = update(250000), third = update(250000), fourth = update(250000);
    const qint64 small = update(16);
    qInfo("atlas %lld bytes; with a 2 MB group: %lld, replaced: %lld, %lld, %lld; replaced by 16 values: %lld", base,
        first, second, third, fourth, small);
    QVERIFY(first >= base + 1900000);
    QVERIFY(std::llabs(second - first) <= first / 100);
    QVERIFY(std::llabs(third - first) <= first / 100);
    QVERIFY(std::llabs(fourth - first) <= first / 100);
    QVERIFY2(small <= base + 20000, "the replaced 2 MB group left its space behind");
}

void TstAtlasUpdate::layoutPermissionsAndSymlinksKept()
{
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), real = dir / "real.atlas.h5", link = dir / "link.atlas.h5";
    makeAtlas(real);
    const Layout before = layoutOf(real, "/layers/1/router_logits");
    QCOMPARE(before.chunk.size(), size_t { 2 });
    QVERIFY(std::find(before.filters.begin(), before.filters.end(), H5Z_FILTER_DEFLATE) != before.filters.end());
    const fs::perms mode = fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read;
    fs::permissions(real, mode);
    fs::create_symlink(real.filename(), link);
    QCOMPARE(AtlasFile::lockPathFor(link), fs::path(real.string() + ".lock"));
    {
        AtlasFile update = AtlasFile::openForUpdate(link);
        QCOMPARE(update.path(), link);
        update.writeResults("scores/peu", results("peu"));
        update.commitUpdate();
        QCOMPARE(update.path(), link);
    }
    QVERIFY(fs::is_symlink(link));
    QCOMPARE(fs::status(real).permissions() & fs::perms::mask, mode);
    QCOMPARE(layoutOf(real, "/layers/1/router_logits"), before);
    QCOMPARE(paramsOf(AtlasFile::openReadOnly(real), "scores/peu"), results("peu").paramsJson);
    checkRecords(AtlasFile::openReadOnly(link));
    QCOMPARE(entries(dir), (QStringList { QStringLiteral("link.atlas.h5"), QStringLiteral("real.atlas.h5") }));
}

void TstAtlasUpdate::partialCaptureIsUntouched()
{
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), path = dir / "run.atlas.h5";
    makeAtlas(path);
    // A new capture to the same name, interrupted after one layer: run.atlas.h5.partial.
    const AtlasTestData d = makeTestData(250);
    {
        AtlasFile capture = AtlasFile::create(path, d.model, d.calibration, d.tokens, d.domainIds, d.seqOffsets, {});
        writeTestLayer(capture, 1);
        capture.markLayerComplete(1);
    }
    const fs::path partial = path.string() + ".partial";
    const QByteArray before = fileHash(partial);
    {
        AtlasFile update = AtlasFile::openForUpdate(path);
        update.writeResults("scores/peu", results("peu"));
        update.commitUpdate();
    }
    {
        AtlasFile aborted = AtlasFile::openForUpdate(path);
        aborted.writeResults("scores/other", results("other"));
    }
    QCOMPARE(fileHash(partial), before);
    QCOMPARE(entries(dir), (QStringList { QStringLiteral("run.atlas.h5"), QStringLiteral("run.atlas.h5.partial") }));
    QCOMPARE(paramsOf(AtlasFile::openReadOnly(path), "scores/peu"), results("peu").paramsJson);
    AtlasFile resumed = AtlasFile::openForResume(path, d.model, d.tokens);
    QCOMPARE(resumed.completedLayers(), std::vector<int> { 1 });
}

void TstAtlasUpdate::killedHolderDoesNotBlock()
{
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), path = dir / "run.atlas.h5";
    makeAtlas(path);
    QProcess child;
    child.start(QCoreApplication::applicationFilePath(),
        { QStringLiteral("--hold-update"), QString::fromStdString(path.string()) });
    QVERIFY(child.waitForStarted());
    QByteArray out;
    while (!out.contains('\n') && child.state() == QProcess::Running) {
        child.waitForReadyRead(100);
        out += child.readAllStandardOutput();
    }
    QVERIFY2(out.startsWith("holding "), QByteArray(out + child.readAllStandardError()).constData());
    const auto pid = static_cast<int64_t>(child.processId());

    const LockHolder holder = FileLock::readHolder(AtlasFile::lockPathFor(path));
    QCOMPARE(holder.pid, pid);
    QCOMPARE(holder.purpose, std::string("tst_atlas_update helper"));
    LockWait wait;
    wait.timeout = 200ms;
    const std::string message = errorOf<InputError>([&] { AtlasFile::openForUpdate(path, wait); });
    QVERIFY2(contains(message, "pid " + std::to_string(pid) + " (tst_atlas_update helper)"), message.c_str());

    ::kill(static_cast<pid_t>(pid), SIGKILL);
    QVERIFY(child.waitForFinished(10000));
    // Killed mid-update: its lock file and its update's file stay behind.
    QCOMPARE(entries(dir),
        (QStringList { QStringLiteral("run.atlas.h5"), QStringLiteral("run.atlas.h5.lock"),
            QStringLiteral("run.atlas.h5.update-XXXXXX") }));
    QCOMPARE(FileLock::readHolder(AtlasFile::lockPathFor(path)).pid, pid);

    // Neither blocks the next update (no wait allowed), which also clears the dead one's file.
    wait.timeout = 0ms;
    {
        AtlasFile update = AtlasFile::openForUpdate(path, wait);
        QCOMPARE(FileLock::readHolder(AtlasFile::lockPathFor(path)).pid, static_cast<int64_t>(::getpid()));
        QCOMPARE(entries(dir),
            (QStringList { QStringLiteral("run.atlas.h5"), QStringLiteral("run.atlas.h5.lock"),
                QStringLiteral("run.atlas.h5.update-XXXXXX") }));
        update.writeResults("scores/peu", results("peu"));
        update.commitUpdate();
    }
    QCOMPARE(entries(dir), QStringList { QStringLiteral("run.atlas.h5") });
    const AtlasFile atlas = AtlasFile::openReadOnly(path);
    QCOMPARE(atlas.resultGroups("scores"), std::vector<std::string> { "peu" });
    QVERIFY(!atlas.readResults("child/result")); // the killed update's group never reached the atlas
    checkRecords(atlas);
}

void TstAtlasUpdate::finalizeWaitsForAnUpdate()
{
    QTemporaryDir tmp;
    const fs::path dir = tmp.path().toStdString(), path = dir / "run.atlas.h5";
    makeAtlas(path, 500); // 2500 tokens
    const AtlasTestData d = makeTestData(250); // the new capture: 1250 tokens
    AtlasFile capture = AtlasFile::create(path, d.model, d.calibration, d.tokens, d.domainIds, d.seqOffsets, {});
    for (int layer : d.model.moeLayers) {
        writeTestLayer(capture, layer);
        capture.markLayerComplete(layer);
    }
    AtlasFile update = AtlasFile::openForUpdate(path);
    std::atomic<bool> finalized = false;
    std::string failure;
    std::thread finisher([&] {
        try {
            capture.finalize();
            finalized = true;
        } catch (const std::exception& e) {
            failure = e.what();
        }
    });
    std::this_thread::sleep_for(500ms);
    const bool early = finalized;
    update.writeResults("scores/old", results("old"));
    update.commitUpdate();
    finisher.join();
    QVERIFY2(failure.empty(), failure.c_str());
    QVERIFY(!early);
    // The new capture replaced the updated old atlas, not the other way round.
    const AtlasFile atlas = AtlasFile::openReadOnly(path);
    QCOMPARE(atlas.numTokens(), int64_t { 1250 });
    QCOMPARE(paramsOf(atlas, "scores/old"), std::string("<absent>"));
    QCOMPARE(entries(dir), QStringList { QStringLiteral("run.atlas.h5") });
}

void TstAtlasUpdate::updateRefusesCaptureWrites()
{
    QTemporaryDir tmp;
    const fs::path path = fs::path(tmp.path().toStdString()) / "run.atlas.h5";
    makeAtlas(path);
    AtlasFile update = AtlasFile::openForUpdate(path);
    const TestBlock block = makeTestBlock(update.model(), 1, 0, 10, false);
    std::string message = errorOf([&] { update.writeRouterBlock(block.block); });
    QVERIFY2(contains(message, "result groups only"), message.c_str());
    message = errorOf([&] { update.finalize(); });
    QVERIFY2(contains(message, "result groups only"), message.c_str());
    message = errorOf([&] { AtlasFile::openReadOnly(path).commitUpdate(); });
    QVERIFY2(contains(message, "read-only"), message.c_str());
}

int main(int argc, char** argv)
{
    if (argc == 3 && std::strcmp(argv[1], "--hold-update") == 0)
        return holdUpdate(argv[2]);
    QCoreApplication app(argc, argv);
    TstAtlasUpdate test;
    return QTest::qExec(&test, argc, argv);
}

#include "tst_atlas_update.moc"
