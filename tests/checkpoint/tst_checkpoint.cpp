// Checkpoint / CheckpointWriter: sharding like transformers, reading back, and the errors a
// damaged checkpoint directory must produce (each naming the directory, file and tensor).
#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_writer.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include "test_io.h"

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

using namespace moeatlas;
using namespace moeatlas::test;
namespace fs = std::filesystem;

namespace {

std::vector<std::byte> pattern(std::size_t n, unsigned seed)
{
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = static_cast<std::byte>((i * 29 + seed * 101) & 0xff);
    return v;
}

bool sameBytes(std::span<const std::byte> a, const std::vector<std::byte>& b)
{
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

std::string tensorName(int i)
{
    return "model.layers." + std::to_string(i) + ".mlp.experts.0.w1.weight";
}

// Writes `count` F32 tensors of `elems[i]` elements each; returns their bytes.
std::vector<std::vector<std::byte>> writeCheckpoint(
    const fs::path& dir, const std::vector<int64_t>& elems, uint64_t maxShardBytes)
{
    std::vector<std::vector<std::byte>> data;
    CheckpointWriter w(dir, { .maxShardBytes = maxShardBytes });
    for (std::size_t i = 0; i < elems.size(); ++i)
        w.declare(tensorName(static_cast<int>(i)), DType::F32, { elems[i] });
    for (std::size_t i = 0; i < elems.size(); ++i) {
        data.push_back(pattern(static_cast<std::size_t>(elems[i]) * 4, static_cast<unsigned>(i)));
        w.write(tensorName(static_cast<int>(i)), data.back());
    }
    w.setConfig({ { "model_type", "mixtral" }, { "hidden_size", 16 } });
    w.addFile("generation_config.json", "{}\n");
    w.finish();
    return data;
}

} // namespace

Q_DECLARE_METATYPE(std::vector<int64_t>)
Q_DECLARE_METATYPE(std::vector<int>)

class TstCheckpoint : public QObject {
    Q_OBJECT

private Q_SLOTS:
    void sharding_data();
    void sharding();
    void singleShardHasNoIndex();
    void damaged_data();
    void damaged();
    void missingTensorLookup();
    void refusesNonEmptyDirectory();
    void overwriteReplacesOnlyAtFinish();
    void destroyedBeforeFinishLeavesNothing();
    void copiesExtraFiles();
    void writerRejectsMisuse();
    void chunkedWrites();
};

void TstCheckpoint::sharding_data()
{
    QTest::addColumn<std::vector<int64_t>>("elems"); // F32 element counts, in order
    QTest::addColumn<qulonglong>("maxShardBytes");
    QTest::addColumn<std::vector<int>>("shardOf"); // expected shard (0-based) of each tensor

    QTest::newRow("two per shard") << std::vector<int64_t> { 16, 16, 16, 16, 16, 16 } << 150ull
                                   << std::vector<int> { 0, 0, 1, 1, 2, 2 };
    QTest::newRow("exact fit") << std::vector<int64_t> { 16, 16, 16, 16 } << 128ull << std::vector<int> { 0, 0, 1, 1 };
    QTest::newRow("oversized tensor alone")
        << std::vector<int64_t> { 4, 100, 4, 4 } << 64ull << std::vector<int> { 0, 1, 2, 2 };
    QTest::newRow("oversized first") << std::vector<int64_t> { 100, 4 } << 64ull << std::vector<int> { 0, 1 };
    QTest::newRow("empty tensors") << std::vector<int64_t> { 16, 0, 16, 0 } << 64ull << std::vector<int> { 0, 0, 1, 1 };
}

void TstCheckpoint::sharding()
{
    QFETCH(std::vector<int64_t>, elems);
    QFETCH(qulonglong, maxShardBytes);
    QFETCH(std::vector<int>, shardOf);
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "out";
    const auto data = writeCheckpoint(dir, elems, maxShardBytes);
    QVERIFY(!fs::exists(fs::path(dir.string() + ".partial")));

    const int shards = shardOf.back() + 1;
    QVERIFY(shards > 1);
    auto shardName = [&](int s) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", s + 1, shards);
        return std::string(buf);
    };
    for (int s = 0; s < shards; ++s)
        QVERIFY2(fs::is_regular_file(dir / shardName(s)), shardName(s).c_str());
    QVERIFY(!fs::exists(dir / "model.safetensors"));

    const auto index = nlohmann::json::parse(readText(dir / "model.safetensors.index.json"));
    uint64_t total = 0;
    for (int64_t e : elems)
        total += static_cast<uint64_t>(e) * 4;
    QCOMPARE(index.at("metadata").at("total_size").get<uint64_t>(), total);
    QCOMPARE(index.at("weight_map").size(), elems.size());
    for (std::size_t i = 0; i < elems.size(); ++i)
        QCOMPARE(index.at("weight_map").at(tensorName(static_cast<int>(i))).get<std::string>(), shardName(shardOf[i]));

    Checkpoint ck(dir);
    QCOMPARE(ck.config().at("model_type").get<std::string>(), std::string("mixtral"));
    const std::vector<std::string> names = ck.names();
    QCOMPARE(names.size(), elems.size());
    QVERIFY(std::is_sorted(names.begin(), names.end()));
    QCOMPARE(ck.totalBytes(), total);
    QCOMPARE(ck.shardPaths().size(), static_cast<std::size_t>(shards));
    for (int s = 0; s < shards; ++s)
        QCOMPARE(ck.shardPaths()[static_cast<std::size_t>(s)].filename().string(), shardName(s));
    for (std::size_t i = 0; i < elems.size(); ++i) {
        const std::string name = tensorName(static_cast<int>(i));
        QVERIFY(ck.contains(name));
        QCOMPARE(ck.info(name).shape, std::vector<int64_t> { elems[i] });
        QCOMPARE(ck.fileOf(name).path().filename().string(), shardName(shardOf[i]));
        QVERIFY(sameBytes(ck.bytes(name), data[i]));
        ck.release(name);
        QVERIFY(sameBytes(ck.bytes(name), data[i]));
    }
    QVERIFY(fs::is_regular_file(dir / "generation_config.json"));

    Checkpoint moved(std::move(ck));
    QVERIFY(moved.contains(tensorName(0)));
}

void TstCheckpoint::singleShardHasNoIndex()
{
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "single";
    const auto data = writeCheckpoint(dir, { 16, 8 }, 1 << 20);
    QVERIFY(fs::is_regular_file(dir / "model.safetensors"));
    QVERIFY(!fs::exists(dir / "model.safetensors.index.json"));
    Checkpoint ck(dir);
    QCOMPARE(ck.shardPaths().size(), std::size_t(1));
    QVERIFY(sameBytes(ck.bytes(tensorName(1)), data[1]));
    QCOMPARE(ck.fileOf(tensorName(0)).metadata().at("format"), std::string("pt"));
    // transformers' formatting: indent 2, sorted keys, trailing newline.
    QCOMPARE(
        readText(dir / "config.json"), std::string("{\n  \"hidden_size\": 16,\n  \"model_type\": \"mixtral\"\n}\n"));
}

void TstCheckpoint::damaged_data()
{
    QTest::addColumn<QString>("damage");
    QTest::addColumn<QStringList>("expected");

    QTest::newRow("missing shard") << QStringLiteral("remove-shard")
                                   << QStringList { QStringLiteral("model-00002-of-00003.safetensors"),
                                          QStringLiteral("model.safetensors.index.json"),
                                          QStringLiteral("does not exist") };
    QTest::newRow("tensor absent from its shard") << QStringLiteral("phantom-tensor")
                                                  << QStringList { QStringLiteral("'model.layers.99.ghost.weight'"),
                                                         QStringLiteral("model-00001-of-00003.safetensors") };
    QTest::newRow("missing config.json") << QStringLiteral("remove-config")
                                         << QStringList { QStringLiteral("config.json") };
    QTest::newRow("config.json not JSON") << QStringLiteral(
        "bad-config") << QStringList { QStringLiteral("config.json"), QStringLiteral("not valid JSON") };
    QTest::newRow("malformed index") << QStringLiteral("bad-index")
                                     << QStringList { QStringLiteral("model.safetensors.index.json"),
                                            QStringLiteral("not valid JSON") };
    QTest::newRow("index without weight_map")
        << QStringLiteral("no-weight-map")
        << QStringList { QStringLiteral("model.safetensors.index.json"), QStringLiteral("weight_map") };
    QTest::newRow("index entry not a string") << QStringLiteral(
        "bad-entry") << QStringList { QStringLiteral("weight_map"), QString::fromStdString(tensorName(0)) };
    QTest::newRow("shard escapes directory")
        << QStringLiteral("escape") << QStringList { QStringLiteral("../evil.safetensors") };
    QTest::newRow("no weights at all") << QStringLiteral(
        "remove-index") << QStringList { QStringLiteral("neither model.safetensors nor model.safetensors.index.json") };
    QTest::newRow("corrupt shard") << QStringLiteral("truncate-shard")
                                   << QStringList { QStringLiteral("model-00003-of-00003.safetensors") };
    QTest::newRow("missing directory") << QStringLiteral("remove-dir")
                                       << QStringList { QStringLiteral("does not exist") };
}

void TstCheckpoint::damaged()
{
    QFETCH(QString, damage);
    QFETCH(QStringList, expected);
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "ckpt";
    writeCheckpoint(dir, { 16, 16, 16, 16, 16, 16 }, 150);
    const fs::path indexPath = dir / "model.safetensors.index.json";
    auto index = nlohmann::json::parse(readText(indexPath));

    if (damage == QStringLiteral("remove-shard")) {
        fs::remove(dir / "model-00002-of-00003.safetensors");
    } else if (damage == QStringLiteral("phantom-tensor")) {
        index["weight_map"]["model.layers.99.ghost.weight"] = "model-00001-of-00003.safetensors";
        writeText(indexPath, index.dump(2));
    } else if (damage == QStringLiteral("remove-config")) {
        fs::remove(dir / "config.json");
    } else if (damage == QStringLiteral("bad-config")) {
        writeText(dir / "config.json", "{\"model_type\": ");
    } else if (damage == QStringLiteral("bad-index")) {
        writeText(indexPath, "{\"weight_map\": {\"a\": ");
    } else if (damage == QStringLiteral("no-weight-map")) {
        writeText(indexPath, "{\"metadata\": {}}");
    } else if (damage == QStringLiteral("bad-entry")) {
        index["weight_map"][tensorName(0)] = 7;
        writeText(indexPath, index.dump(2));
    } else if (damage == QStringLiteral("escape")) {
        index["weight_map"][tensorName(0)] = "../evil.safetensors";
        writeText(indexPath, index.dump(2));
    } else if (damage == QStringLiteral("remove-index")) {
        fs::remove(indexPath);
    } else if (damage == QStringLiteral("truncate-shard")) {
        fs::resize_file(dir / "model-00003-of-00003.safetensors", 40);
    } else if (damage == QStringLiteral("remove-dir")) {
        fs::remove_all(dir);
    } else {
        QFAIL("unknown damage");
    }

    const QString message = inputErrorOf([&] { Checkpoint ck(dir); });
    QVERIFY2(!message.isNull(), "no InputError thrown");
    QVERIFY2(message.contains(QString::fromStdString(dir.string())), qPrintable(message));
    for (const QString& fragment : expected)
        QVERIFY2(message.contains(fragment),
            qPrintable(QStringLiteral("missing '") + fragment + QStringLiteral("' in: ") + message));
}

void TstCheckpoint::missingTensorLookup()
{
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "ckpt";
    writeCheckpoint(dir, { 4 }, 1 << 20);
    Checkpoint ck(dir);
    QVERIFY(!ck.contains("lm_head.weight"));
    const QString message = inputErrorOf([&] { (void)ck.info("lm_head.weight"); });
    QCOMPARE(message, QString::fromStdString(dir.string() + ": missing tensor 'lm_head.weight'"));
    QVERIFY(!inputErrorOf([&] { (void)ck.bytes("lm_head.weight"); }).isNull());
}

void TstCheckpoint::refusesNonEmptyDirectory()
{
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "busy";
    fs::create_directories(dir);
    writeText(dir / "keep.txt", "mine");
    const QString message = inputErrorOf([&] { CheckpointWriter w(dir); });
    QVERIFY2(message.contains(QString::fromStdString(dir.string())) && message.contains(QStringLiteral("not empty")),
        qPrintable(message));
    QCOMPARE(readText(dir / "keep.txt"), std::string("mine"));
    QVERIFY(!fs::exists(fs::path(dir.string() + ".partial")));

    // An existing empty directory is fine.
    const fs::path empty = fs::path(tmp.path().toStdString()) / "empty";
    fs::create_directories(empty);
    writeCheckpoint(empty, { 4 }, 1 << 20);
    QVERIFY(fs::is_regular_file(empty / "model.safetensors"));

    // A parent that does not exist.
    QVERIFY(!inputErrorOf([&] {
        CheckpointWriter w(fs::path(tmp.path().toStdString()) / "no" / "such" / "out");
    }).isNull());
}

void TstCheckpoint::overwriteReplacesOnlyAtFinish()
{
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "out";
    writeCheckpoint(dir, { 16, 16, 16 }, 100); // sharded old output
    {
        CheckpointWriter w(dir, { .maxShardBytes = 1 << 20, .overwrite = true });
        w.declare("x", DType::U8, { 3 });
        w.write("x", pattern(3, 0));
        w.setConfig({ { "model_type", "olmoe" } });
        QVERIFY(fs::exists(dir / "model.safetensors.index.json")); // old output untouched so far
        w.finish();
    }
    QVERIFY(!fs::exists(dir / "model.safetensors.index.json"));
    QVERIFY(!fs::exists(fs::path(dir.string() + ".partial")));
    Checkpoint ck(dir);
    QCOMPARE(ck.names(), std::vector<std::string> { "x" });
    QCOMPARE(ck.config().at("model_type").get<std::string>(), std::string("olmoe"));

    // Without finish() an overwrite leaves the old output as it was.
    {
        CheckpointWriter w(dir, { .overwrite = true });
        w.declare("y", DType::U8, { 1 });
        w.write("y", pattern(1, 0));
    }
    QCOMPARE(Checkpoint(dir).names(), std::vector<std::string> { "x" });
}

void TstCheckpoint::destroyedBeforeFinishLeavesNothing()
{
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "never";
    {
        CheckpointWriter w(dir, { .maxShardBytes = 8 });
        w.declare("a", DType::F32, { 2 });
        w.declare("b", DType::F32, { 2 });
        w.write("a", pattern(8, 0));
        w.write("b", pattern(8, 1)); // first shard already finished inside the partial dir
        QVERIFY(fs::is_directory(fs::path(dir.string() + ".partial")));
    }
    QVERIFY(!fs::exists(dir));
    QVERIFY(!fs::exists(fs::path(dir.string() + ".partial")));
}

void TstCheckpoint::copiesExtraFiles()
{
    QTemporaryDir tmp;
    const fs::path root = tmp.path().toStdString();
    writeText(root / "tokenizer.json", "{\"version\": \"1.0\"}");
    const fs::path dir = root / "withfiles/"; // trailing separator names the same directory
    {
        CheckpointWriter w(dir);
        w.declare("a", DType::I64, { 2 });
        w.write("a", pattern(16, 0));
        w.copyFile(root / "tokenizer.json", "tokenizer.json");
        w.addFile("docs/README.md", "# model\n");
        w.setConfig({ { "model_type", "qwen3_moe" } });
        QVERIFY(!inputErrorOf([&] { w.copyFile(root / "absent.json", "absent.json"); }).isNull());
        QVERIFY(!inputErrorOf([&] { w.addFile("../escape.txt", "x"); }).isNull());
        w.finish();
    }
    QCOMPARE(readText(root / "withfiles" / "tokenizer.json"), std::string("{\"version\": \"1.0\"}"));
    QCOMPARE(readText(root / "withfiles" / "docs" / "README.md"), std::string("# model\n"));
    QVERIFY(!fs::exists(root / "escape.txt"));
    QVERIFY(Checkpoint(root / "withfiles").contains("a"));
}

void TstCheckpoint::writerRejectsMisuse()
{
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "misuse";
    CheckpointWriter w(dir);
    w.declare("a", DType::F32, { 2 });
    w.declare("b", DType::F32, { 2 });
    QVERIFY(!inputErrorOf([&] { w.declare("a", DType::F32, { 2 }); }).isNull());
    QVERIFY_THROWS_EXCEPTION(Error, w.write("b", pattern(8, 0))); // out of order
    QVERIFY_THROWS_EXCEPTION(Error, w.write("a", pattern(4, 0))); // not the whole tensor
    w.write("a", pattern(8, 0));
    QVERIFY_THROWS_EXCEPTION(Error, w.finish()); // b never written
}

// Tensors written in several writeChunk() calls (uneven pieces, an empty one, across a shard
// boundary) read back byte-identical to whole writes; misuse mid-tensor is refused.
void TstCheckpoint::chunkedWrites()
{
    QTemporaryDir tmp;
    const fs::path dir = fs::path(tmp.path().toStdString()) / "chunked";
    const std::vector<std::byte> a = pattern(40, 1), b = pattern(24, 2), c = pattern(8, 3);
    {
        CheckpointWriter w(dir, { .maxShardBytes = 48 }); // a alone, then b + c
        w.declare("a", DType::F32, { 10 });
        w.declare("b", DType::F32, { 2, 3 });
        w.declare("c", DType::F32, { 2 });
        const std::span<const std::byte> sa(a), sb(b);
        w.writeChunk("a", sa.subspan(0, 12));
        w.writeChunk("a", sa.subspan(12, 0));
        QVERIFY_THROWS_EXCEPTION(Error, w.write("a", sa.subspan(12))); // whole write mid-tensor
        QVERIFY_THROWS_EXCEPTION(Error, w.writeChunk("b", sb)); // a is not complete
        w.writeChunk("a", sa.subspan(12, 27));
        QVERIFY_THROWS_EXCEPTION(Error, w.writeChunk("a", sa.subspan(38))); // 2 bytes past the end
        w.writeChunk("a", sa.subspan(39));
        for (std::size_t r = 0; r < 2; ++r)
            w.writeChunk("b", sb.subspan(r * 12, 12));
        w.writeChunk("c", std::span<const std::byte>(c).subspan(0, 4));
        QVERIFY_THROWS_EXCEPTION(Error, w.finish()); // c half written
    }
    QVERIFY(!fs::exists(dir));
    {
        CheckpointWriter w(dir, { .maxShardBytes = 48 });
        w.declare("a", DType::F32, { 10 });
        w.declare("b", DType::F32, { 2, 3 });
        w.declare("c", DType::F32, { 2 });
        for (std::size_t i = 0; i < a.size(); i += 7)
            w.writeChunk("a", std::span<const std::byte>(a).subspan(i, std::min<std::size_t>(7, a.size() - i)));
        w.writeChunk("b", std::span<const std::byte>(b).subspan(0, 20));
        w.writeChunk("b", std::span<const std::byte>(b).subspan(20));
        w.write("c", c);
        w.setConfig({ { "model_type", "mixtral" } });
        w.finish();
    }
    const Checkpoint ck(dir);
    QCOMPARE(ck.shardPaths().size(), std::size_t { 2 });
    QVERIFY(sameBytes(ck.bytes("a"), a));
    QVERIFY(sameBytes(ck.bytes("b"), b));
    QVERIFY(sameBytes(ck.bytes("c"), c));
    QCOMPARE(ck.info("b").shape, (std::vector<int64_t> { 2, 3 }));
}

QTEST_GUILESS_MAIN(TstCheckpoint)
#include "tst_checkpoint.moc"
