// Export at the byte level: kept experts renumbered densely, router rows sliced, config rewritten
// (only the expert-count key), per-expert and fused layouts, and atomicity: a non-empty output is
// refused, nothing appears under the final name on failure, the source is never touched.
#include "checkpoint/checkpoint.h"
#include "checkpoint/random_model.h"
#include "export/exporter.h"
#include "test_io.h"
#include "util/error.h"
#include "util/sha256.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>

using namespace moeatlas;
using namespace moeatlas::test;
namespace fs = std::filesystem;

namespace {

RandomModelOptions smallModel(Architecture arch, bool fused)
{
    RandomModelOptions o;
    o.arch = arch;
    o.numLayers = 3;
    o.hiddenSize = 32;
    o.numHeads = 2;
    o.numKvHeads = 1;
    o.headDim = 16;
    o.numExperts = 8;
    o.topK = 2;
    o.moeIntermediate = 16;
    o.vocabSize = 64;
    o.fusedExperts = fused;
    o.maxShardBytes = 40000; // several shards
    return o;
}

Plan planFor(const std::vector<std::vector<int>>& keep)
{
    Plan p;
    p.method = "specialist";
    p.criterion = "peu";
    p.modelType = "qwen3_moe";
    p.numExperts = 8;
    p.topK = 2;
    for (std::size_t l = 0; l < keep.size(); ++l)
        p.layers.push_back(static_cast<int>(l));
    p.keep = keep;
    return p;
}

std::map<std::string, std::string> hashTree(const fs::path& dir)
{
    std::map<std::string, std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file())
            out[fs::relative(e.path(), dir).string()] = sha256File(e.path());
    return out;
}

std::vector<std::byte> bytesOf(const Checkpoint& c, const std::string& name)
{
    const auto s = c.bytes(name);
    return { s.begin(), s.end() };
}

std::vector<std::byte> rowsOf(const Checkpoint& c, const std::string& name, const std::vector<int>& rows)
{
    const auto s = c.bytes(name);
    const std::size_t row = s.size() / static_cast<std::size_t>(c.info(name).shape[0]);
    std::vector<std::byte> out;
    for (int r : rows)
        out.insert(out.end(), s.begin() + static_cast<std::ptrdiff_t>(r * row),
            s.begin() + static_cast<std::ptrdiff_t>((r + 1) * row));
    return out;
}

} // namespace

class TestExport : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void perExpertBytesExact_data()
    {
        QTest::addColumn<int>("arch");
        QTest::newRow("qwen3_moe") << static_cast<int>(Architecture::Qwen3Moe);
        QTest::newRow("mixtral") << static_cast<int>(Architecture::Mixtral);
    }
    void perExpertBytesExact()
    {
        QFETCH(int, arch);
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        const fs::path dst = tmp.filePath(QStringLiteral("out")).toStdString();
        const auto a = static_cast<Architecture>(arch);
        writeRandomModel(smallModel(a, false), src, false);
        {
            std::ofstream(src / "tokenizer.json") << "{\"fake\": true}";
        }
        const auto before = hashTree(src);
        const std::vector<std::vector<int>> keep = { { 1, 4, 6, 7 }, { 0, 1, 2, 3 }, { 2, 3, 5, 6 } };
        const ExportResult r = exportCheckpoint(src, planFor(keep), dst);
        QVERIFY(r.uniform);
        QCOMPARE(hashTree(src), before);

        const Checkpoint in(src), out(dst);
        const bool mixtral = a == Architecture::Mixtral;
        const std::string block = mixtral ? "block_sparse_moe." : "mlp.";
        const std::vector<std::string> projs = mixtral
            ? std::vector<std::string> { "w1", "w2", "w3" }
            : std::vector<std::string> { "gate_proj", "up_proj", "down_proj" };
        for (int l = 0; l < 3; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + "." + block;
            const auto& k = keep[static_cast<std::size_t>(l)];
            for (std::size_t j = 0; j < k.size(); ++j)
                for (const std::string& proj : projs)
                    QVERIFY(bytesOf(out, p + "experts." + std::to_string(j) + "." + proj + ".weight")
                        == bytesOf(in, p + "experts." + std::to_string(k[j]) + "." + proj + ".weight"));
            QVERIFY(!out.contains(p + "experts.4." + projs[0] + ".weight"));
            QCOMPARE(out.info(p + "gate.weight").shape, (std::vector<int64_t> { 4, 32 }));
            QVERIFY(bytesOf(out, p + "gate.weight") == rowsOf(in, p + "gate.weight", k));
        }
        // Everything that is not a routed expert or router is copied verbatim.
        for (const std::string& name : out.names())
            if (name.find(".experts.") == std::string::npos && name.find(".gate.weight") == std::string::npos)
                QVERIFY(bytesOf(out, name) == bytesOf(in, name));
        QCOMPARE(out.names().size(), in.names().size() - 3u * 4u * 3u);

        nlohmann::json cin = in.config(), cout = out.config();
        const std::string key = mixtral ? "num_local_experts" : "num_experts";
        QCOMPARE(cout[key].get<int>(), 4);
        cout[key] = cin[key];
        QVERIFY(cout == cin); // only the expert-count key changed
        QVERIFY(fs::exists(dst / "tokenizer.json"));
        QVERIFY(fs::exists(dst / "README.md"));
        QVERIFY(!fs::exists(dst / "modeling_moeatlas.py"));
    }
    void fusedBytesExact()
    {
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        const fs::path dst = tmp.filePath(QStringLiteral("out")).toStdString();
        writeRandomModel(smallModel(Architecture::Qwen3Moe, true), src, false);
        const std::vector<std::vector<int>> keep = { { 0, 5 }, { 1, 2, 3 }, { 2, 3, 4, 5, 7 } };
        const ExportResult r = exportCheckpoint(src, planFor(keep), dst);
        QVERIFY(!r.uniform);
        const Checkpoint in(src), out(dst);
        for (int l = 0; l < 3; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
            const auto& k = keep[static_cast<std::size_t>(l)];
            for (const char* n : { "experts.gate_up_proj", "experts.down_proj", "gate.weight" }) {
                QCOMPARE(out.info(p + n).shape[0], static_cast<int64_t>(k.size()));
                QVERIFY(bytesOf(out, p + n) == rowsOf(in, p + n, k));
            }
        }
        const nlohmann::json c = out.config();
        QCOMPARE(c["num_experts"].get<int>(), 5);
        QCOMPARE(c["num_experts_per_layer"].get<std::vector<int>>(), (std::vector<int> { 2, 3, 5 }));
        QCOMPARE(c["auto_map"]["AutoModelForCausalLM"].get<std::string>(),
            std::string("modeling_moeatlas.MoeAtlasQwen3MoeForCausalLM"));
        QVERIFY(fs::exists(dst / "modeling_moeatlas.py"));
    }
    void refusesNonEmptyOutput()
    {
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        const fs::path dst = tmp.filePath(QStringLiteral("out")).toStdString();
        writeRandomModel(smallModel(Architecture::Qwen3Moe, false), src, false);
        fs::create_directories(dst);
        {
            std::ofstream(dst / "keep.txt") << "mine";
        }
        const Plan p = planFor({ { 0, 1 }, { 0, 1 }, { 0, 1 } });
        QVERIFY(inputErrorOf([&] { exportCheckpoint(src, p, dst); }).contains(QStringLiteral("not empty")));
        QCOMPARE(hashTree(dst).size(), std::size_t { 1 });
        ExportOptions force;
        force.force = true;
        exportCheckpoint(src, p, dst, force);
        QVERIFY(!fs::exists(dst / "keep.txt"));
        QVERIFY(fs::exists(dst / "config.json"));
    }
    void nothingUnderFinalNameOnFailure()
    {
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        const fs::path dst = tmp.filePath(QStringLiteral("out")).toStdString();
        writeRandomModel(smallModel(Architecture::Qwen3Moe, false), src, false);
        const auto before = hashTree(src);
        // Fewer than top-k experts: refused before anything is written.
        QVERIFY(inputErrorOf([&] {
            exportCheckpoint(src, planFor({ { 0 }, { 0, 1 }, { 0, 1 } }), dst);
        }).contains(QStringLiteral("top-k")));
        // Cancelled half-way: the partial directory is removed, nothing under the final name.
        ExportOptions cancel;
        int calls = 0;
        cancel.progress = [&](const Progress&) { return ++calls < 5; };
        QVERIFY_THROWS_EXCEPTION(
            Cancelled, exportCheckpoint(src, planFor({ { 0, 1 }, { 0, 1 }, { 0, 1 } }), dst, cancel));
        QVERIFY(!fs::exists(dst));
        QVERIFY(!fs::exists(tmp.filePath(QStringLiteral("out.partial")).toStdString()));
        std::size_t entries = 0;
        for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp.path().toStdString()))
            ++entries;
        QCOMPARE(entries, std::size_t { 1 }); // only src
        QCOMPARE(hashTree(src), before);
    }
    void neverWritesIntoSource()
    {
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        writeRandomModel(smallModel(Architecture::Qwen3Moe, false), src, false);
        const auto before = hashTree(src);
        ExportOptions force;
        force.force = true;
        const Plan p = planFor({ { 0, 1 }, { 0, 1 }, { 0, 1 } });
        QVERIFY(inputErrorOf([&] { exportCheckpoint(src, p, src, force); }).contains(QStringLiteral("source")));
        QVERIFY(
            inputErrorOf([&] { exportCheckpoint(src, p, src / "pruned", force); }).contains(QStringLiteral("source")));
        QVERIFY(inputErrorOf([&] {
            exportCheckpoint(src, p, src.parent_path(), force);
        }).contains(QStringLiteral("source")));
        QCOMPARE(hashTree(src), before);
    }
};

QTEST_GUILESS_MAIN(TestExport)
#include "tst_export.moc"
