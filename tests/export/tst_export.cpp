// Export at the byte level: kept experts renumbered densely, router rows sliced, config rewritten
// (only the expert-count key), per-expert and fused layouts, and atomicity: a non-empty output is
// refused, nothing appears under the final name on failure, the source is never touched.
// Dimension plans: kept units sliced from gate/up rows and down columns (stock layout with a smaller
// width key for one width everywhere, per-expert ragged tensors otherwise, width 0 included), and
// the bytes written equal the plan's predicted size.
// Routing rules: top-k:K changes only num_experts_per_tok, a dynamic rule adds moeatlas_routing and
// the modeling file; bad rules are refused with RequestError("routing") before anything is written.
#include "checkpoint/checkpoint.h"
#include "checkpoint/random_model.h"
#include "export/exporter.h"
#include "plan/plan_costs.h"
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
#include <numeric>
#include <optional>

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

// Rows `rows` and columns `cols` (nullopt = all) of the row-major [R, C] float32 matrix starting
// `offset` bytes into the tensor, in row-major order.
std::vector<std::byte> select2d(const Checkpoint& c, const std::string& name, uint64_t offset, int64_t R, int64_t C,
    std::optional<std::vector<int>> rows, std::optional<std::vector<int>> cols)
{
    const auto s = c.bytes(name);
    const auto all = [](int64_t n) {
        std::vector<int> ids(static_cast<std::size_t>(n));
        std::iota(ids.begin(), ids.end(), 0);
        return ids;
    };
    std::vector<std::byte> out;
    for (const int r : rows.value_or(all(R)))
        for (const int k : cols.value_or(all(C))) {
            const auto at = s.begin() + static_cast<std::ptrdiff_t>(offset + (static_cast<uint64_t>(r * C + k)) * 4);
            out.insert(out.end(), at, at + 4);
        }
    return out;
}

std::vector<int> shiftedBy(std::vector<int> ids, int by)
{
    for (int& i : ids)
        i += by;
    return ids;
}

// Expert k of layer l keeps the first `width` units of the permutation j -> (7 j + k + l) mod 16,
// so kept units are scattered (runs of one and of several) and differ per expert.
std::vector<int> unitsFor(int l, int k, int width)
{
    std::vector<int> units;
    for (int j = 0; j < 16; ++j)
        if ((j * 7 + k + l) % 16 < width)
            units.push_back(j);
    return units;
}

Plan dimsPlanFor(const std::vector<std::vector<int>>& keep, const std::function<int(int, int)>& width)
{
    Plan p = planFor(keep);
    p.units.resize(keep.size());
    for (std::size_t l = 0; l < keep.size(); ++l)
        for (std::size_t k = 0; k < keep[l].size(); ++k)
            p.units[l].push_back(
                unitsFor(static_cast<int>(l), static_cast<int>(k), width(static_cast<int>(l), static_cast<int>(k))));
    p.dims = DimPruning { "IntDim-G", "test", "", 0.5, 16 };
    return p;
}

uint64_t tensorBytes(const Checkpoint& c)
{
    uint64_t n = 0;
    for (const std::string& name : c.names())
        n += c.info(name).byteSize();
    return n;
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
    void dimsStockBytesExact_data()
    {
        QTest::addColumn<int>("arch");
        QTest::addColumn<bool>("fused");
        for (const bool fused : { false, true }) {
            QTest::addRow("qwen3_moe/%s", fused ? "fused" : "per-expert")
                << static_cast<int>(Architecture::Qwen3Moe) << fused;
            QTest::addRow("mixtral/%s", fused ? "fused" : "per-expert")
                << static_cast<int>(Architecture::Mixtral) << fused;
        }
    }
    // Every kept expert keeps 6 of 16 units: the stock layout, sliced, with the width key at 6.
    void dimsStockBytesExact()
    {
        QFETCH(int, arch);
        QFETCH(bool, fused);
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        const fs::path dst = tmp.filePath(QStringLiteral("out")).toStdString();
        const auto a = static_cast<Architecture>(arch);
        writeRandomModel(smallModel(a, fused), src, false);
        const std::vector<std::vector<int>> keep = { { 1, 4, 6, 7 }, { 0, 1, 2, 3 }, { 2, 3, 5, 6 } };
        Plan plan = dimsPlanFor(keep, [](int, int) { return 6; });
        const Checkpoint in(src);
        fillPrediction(plan, planContextFor(in));
        const ExportResult r = exportCheckpoint(src, plan, dst);
        QVERIFY(r.uniform);
        QVERIFY(!r.ragged);
        const Checkpoint out(dst);
        const bool mixtral = a == Architecture::Mixtral;
        const std::string block = mixtral && !fused ? "block_sparse_moe." : "mlp.";
        for (int l = 0; l < 3; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + "." + block;
            const auto& k = keep[static_cast<std::size_t>(l)];
            if (fused) {
                QCOMPARE(out.info(p + "experts.gate_up_proj").shape, (std::vector<int64_t> { 4, 12, 32 }));
                QCOMPARE(out.info(p + "experts.down_proj").shape, (std::vector<int64_t> { 4, 32, 6 }));
                std::vector<std::byte> gateUp, down;
                for (std::size_t j = 0; j < k.size(); ++j) {
                    const std::vector<int> u = plan.units[static_cast<std::size_t>(l)][j];
                    std::vector<int> rows = u; // gate rows, then the same units of up (rows I + j)
                    const std::vector<int> up = shiftedBy(u, 16);
                    rows.insert(rows.end(), up.begin(), up.end());
                    const auto e = static_cast<uint64_t>(k[j]);
                    const auto part
                        = select2d(in, p + "experts.gate_up_proj", e * 32 * 32 * 4, 32, 32, rows, std::nullopt);
                    gateUp.insert(gateUp.end(), part.begin(), part.end());
                    const auto col = select2d(in, p + "experts.down_proj", e * 32 * 16 * 4, 32, 16, std::nullopt, u);
                    down.insert(down.end(), col.begin(), col.end());
                }
                QVERIFY(bytesOf(out, p + "experts.gate_up_proj") == gateUp);
                QVERIFY(bytesOf(out, p + "experts.down_proj") == down);
            } else {
                const std::vector<std::string> rowsProj = mixtral ? std::vector<std::string> { "w1", "w3" }
                                                                  : std::vector<std::string> { "gate_proj", "up_proj" };
                const std::string downProj = mixtral ? "w2" : "down_proj";
                for (std::size_t j = 0; j < k.size(); ++j) {
                    const std::vector<int> u = plan.units[static_cast<std::size_t>(l)][j];
                    const std::string from = p + "experts." + std::to_string(k[j]) + ".";
                    const std::string to = p + "experts." + std::to_string(j) + ".";
                    for (const std::string& proj : rowsProj) {
                        QCOMPARE(out.info(to + proj + ".weight").shape, (std::vector<int64_t> { 6, 32 }));
                        QVERIFY(bytesOf(out, to + proj + ".weight")
                            == select2d(in, from + proj + ".weight", 0, 16, 32, u, std::nullopt));
                    }
                    QCOMPARE(out.info(to + downProj + ".weight").shape, (std::vector<int64_t> { 32, 6 }));
                    QVERIFY(bytesOf(out, to + downProj + ".weight")
                        == select2d(in, from + downProj + ".weight", 0, 32, 16, std::nullopt, u));
                }
            }
            QVERIFY(bytesOf(out, p + "gate.weight") == rowsOf(in, p + "gate.weight", k));
        }
        nlohmann::json cin = in.config(), cout = out.config();
        const std::string countKey = mixtral ? "num_local_experts" : "num_experts";
        const std::string widthKey = mixtral ? "intermediate_size" : "moe_intermediate_size";
        QCOMPARE(cout[countKey].get<int>(), 4);
        QCOMPARE(cout[widthKey].get<int>(), 6);
        cout[countKey] = cin[countKey];
        cout[widthKey] = cin[widthKey];
        QVERIFY(cout == cin); // only the expert-count and width keys changed
        QVERIFY(!fs::exists(dst / "modeling_moeatlas.py"));
        QCOMPARE(tensorBytes(out), plan.bytesAfter);
        QCOMPARE(r.tensorBytes, plan.bytesAfter);
    }
    void dimsRaggedBytesExact_data() { dimsStockBytesExact_data(); }
    // Per-layer counts (3, 6, 2) and per-expert widths 0..16: per-expert tensors under mlp.experts.<k>
    // whatever the source layout, the router under mlp.gate, widths in config.
    void dimsRaggedBytesExact()
    {
        QFETCH(int, arch);
        QFETCH(bool, fused);
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        const fs::path dst = tmp.filePath(QStringLiteral("out")).toStdString();
        const auto a = static_cast<Architecture>(arch);
        writeRandomModel(smallModel(a, fused), src, false);
        const std::vector<std::vector<int>> keep = { { 1, 4, 6 }, { 0, 1, 2, 3, 5, 7 }, { 2, 3 } };
        // Expert 1 of layer 0 and expert 0 of layer 2 keep nothing; the others 1..16 units.
        const auto width
            = [](int l, int k) { return (l == 0 && k == 1) || (l == 2 && k == 0) ? 0 : 1 + (k * 5 + l * 3) % 16; };
        Plan plan = dimsPlanFor(keep, width);
        const Checkpoint in(src);
        fillPrediction(plan, planContextFor(in));
        const ExportResult r = exportCheckpoint(src, plan, dst);
        QVERIFY(!r.uniform);
        QVERIFY(r.ragged);
        const Checkpoint out(dst);
        const bool mixtral = a == Architecture::Mixtral;
        const std::string srcBlock = mixtral && !fused ? "block_sparse_moe." : "mlp.";
        const std::vector<std::string> names = mixtral && !fused
            ? std::vector<std::string> { "w1", "w3", "w2" }
            : std::vector<std::string> { "gate_proj", "up_proj", "down_proj" };
        int64_t experts = 0;
        for (int l = 0; l < 3; ++l) {
            const std::string lp = "model.layers." + std::to_string(l) + ".";
            const auto& k = keep[static_cast<std::size_t>(l)];
            for (std::size_t j = 0; j < k.size(); ++j) {
                const std::vector<int> u = plan.units[static_cast<std::size_t>(l)][j];
                const auto w = static_cast<int64_t>(u.size());
                QCOMPARE(w, static_cast<int64_t>(width(l, static_cast<int>(j))));
                const std::string to = lp + "mlp.experts." + std::to_string(j) + ".";
                QCOMPARE(out.info(to + "gate_proj.weight").shape, (std::vector<int64_t> { w, 32 }));
                QCOMPARE(out.info(to + "up_proj.weight").shape, (std::vector<int64_t> { w, 32 }));
                QCOMPARE(out.info(to + "down_proj.weight").shape, (std::vector<int64_t> { 32, w }));
                const auto e = static_cast<uint64_t>(k[j]);
                const std::string from = lp + srcBlock + "experts.";
                if (fused) {
                    const std::string gu = from + "gate_up_proj", dn = from + "down_proj";
                    QVERIFY(bytesOf(out, to + "gate_proj.weight")
                        == select2d(in, gu, e * 32 * 32 * 4, 32, 32, u, std::nullopt));
                    QVERIFY(bytesOf(out, to + "up_proj.weight")
                        == select2d(in, gu, e * 32 * 32 * 4, 32, 32, shiftedBy(u, 16), std::nullopt));
                    QVERIFY(bytesOf(out, to + "down_proj.weight")
                        == select2d(in, dn, e * 32 * 16 * 4, 32, 16, std::nullopt, u));
                } else {
                    const std::string ex = from + std::to_string(e) + ".";
                    QVERIFY(bytesOf(out, to + "gate_proj.weight")
                        == select2d(in, ex + names[0] + ".weight", 0, 16, 32, u, std::nullopt));
                    QVERIFY(bytesOf(out, to + "up_proj.weight")
                        == select2d(in, ex + names[1] + ".weight", 0, 16, 32, u, std::nullopt));
                    QVERIFY(bytesOf(out, to + "down_proj.weight")
                        == select2d(in, ex + names[2] + ".weight", 0, 32, 16, std::nullopt, u));
                }
                ++experts;
            }
            QVERIFY(bytesOf(out, lp + "mlp.gate.weight") == rowsOf(in, lp + srcBlock + "gate.weight", k));
        }
        // Nothing else of the routed experts: 3 tensors per kept expert, no fused or per-source names.
        for (const std::string& name : out.names()) {
            QVERIFY2(name.find("block_sparse_moe") == std::string::npos, name.c_str());
            QVERIFY2(
                name.find("gate_up_proj") == std::string::npos && name.find("experts.down_proj") == std::string::npos,
                name.c_str());
            if (name.find(".experts.") == std::string::npos && name.find(".gate.weight") == std::string::npos)
                QVERIFY(bytesOf(out, name) == bytesOf(in, name));
        }
        const std::size_t routed = fused ? 3u * 2u : 3u * 8u * 3u; // source tensors of the routed experts
        QCOMPARE(out.names().size(), in.names().size() - routed + static_cast<std::size_t>(experts) * 3u);

        const nlohmann::json c = out.config();
        QCOMPARE(c[mixtral ? "num_local_experts" : "num_experts"].get<int>(), 6);
        QCOMPARE(c[mixtral ? "intermediate_size" : "moe_intermediate_size"].get<int>(), 16); // unchanged
        QCOMPARE(c["num_experts_per_layer"].get<std::vector<int>>(), (std::vector<int> { 3, 6, 2 }));
        QCOMPARE(c["moeatlas_expert_widths"].dump(), std::string("[[1,0,11],[4,9,14,3,8,13],[0,12]]"));
        QCOMPARE(c["auto_map"]["AutoModelForCausalLM"].get<std::string>(),
            "modeling_moeatlas." + nonUniformClassName(mixtral ? "mixtral" : "qwen3_moe"));
        std::ifstream modeling(dst / "modeling_moeatlas.py");
        QCOMPARE(std::string(std::istreambuf_iterator<char>(modeling), {}), nonUniformModelingSource());
        QCOMPARE(tensorBytes(out), plan.bytesAfter);
        QCOMPARE(r.tensorBytes, plan.bytesAfter);
    }
    void dimsRefusedBeforeWriting()
    {
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        const fs::path dst = tmp.filePath(QStringLiteral("out")).toStdString();
        writeRandomModel(smallModel(Architecture::Qwen3Moe, false), src, false);
        const std::vector<std::vector<int>> keep = { { 0, 1 }, { 0, 1 }, { 0, 1 } };
        Plan wide = dimsPlanFor(keep, [](int, int) { return 4; });
        wide.dims.intermediate = 32;
        QVERIFY(inputErrorOf([&] {
            exportCheckpoint(src, wide, dst);
        }).contains(QStringLiteral("plan: dims are for routed experts of 32 units but ")));
        Plan unsorted = dimsPlanFor(keep, [](int, int) { return 4; });
        std::reverse(unsorted.units[1][0].begin(), unsorted.units[1][0].end());
        QVERIFY(inputErrorOf([&] {
            exportCheckpoint(src, unsorted, dst);
        }).contains(QStringLiteral("plan: dims, layer 1, expert 0: unit")));
        Plan missing = dimsPlanFor(keep, [](int, int) { return 4; });
        missing.units[2].pop_back();
        QVERIFY(inputErrorOf([&] {
            exportCheckpoint(src, missing, dst);
        }).contains(QStringLiteral("units for 1 experts, the layer keeps 2")));
        QVERIFY(!fs::exists(dst));
        QVERIFY(!fs::exists(tmp.filePath(QStringLiteral("out.partial")).toStdString()));
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
    void routingRuleInConfig()
    {
        QTemporaryDir tmp;
        const fs::path src = tmp.filePath(QStringLiteral("src")).toStdString();
        writeRandomModel(smallModel(Architecture::Olmoe, false), src, false);
        const Plan p = planFor({ { 0, 1, 2, 5 }, { 1, 2, 3, 4 }, { 0, 3, 6, 7 } });
        const nlohmann::json source = Checkpoint(src).config();
        const auto exportWith = [&](const std::string& name, const RoutingRule& rule) {
            ExportOptions o;
            o.routing = rule;
            const ExportResult r = exportCheckpoint(src, p, src.parent_path() / name, o);
            return std::make_pair(r, Checkpoint(src.parent_path() / name).config());
        };
        // top-k:3: the expert count and num_experts_per_tok, nothing else; no modeling file.
        const auto [topK, topKConfig] = exportWith("topk", exportRoutingRule(src, "top-k:3"));
        QVERIFY(topK.uniform && !topK.dynamicRouting);
        nlohmann::json expected = source;
        expected["num_experts"] = 4;
        expected["num_experts_per_tok"] = 3;
        QCOMPARE(QString::fromStdString(topKConfig.dump()), QString::fromStdString(expected.dump()));
        QVERIFY(!fs::exists(src.parent_path() / "topk" / "modeling_moeatlas.py"));
        // top-p:0.75:1:4: the rule, KMAX as num_experts_per_tok, the modeling file with auto_map.
        const auto [topP, topPConfig] = exportWith("topp", exportRoutingRule(src, "top-p:0.75:1:4"));
        QVERIFY(topP.uniform && topP.dynamicRouting);
        QCOMPARE(topPConfig["num_experts_per_tok"].get<int>(), 4);
        QCOMPARE(QString::fromStdString(topPConfig["moeatlas_routing"].dump()),
            QStringLiteral(R"({"k_max":4,"k_min":1,"kind":"top-p","p":0.75,"rule":"top-p:0.75:1:4"})"));
        QCOMPARE(topPConfig["auto_map"]["AutoModelForCausalLM"].get<std::string>(),
            std::string("modeling_moeatlas.MoeAtlasOlmoeForCausalLM"));
        QVERIFY(fs::exists(src.parent_path() / "topp" / "modeling_moeatlas.py"));
        // threshold with every layer's threshold: written as given.
        RoutingRule threshold = exportRoutingRule(src, "threshold:1.5");
        threshold.thresholds = { { 0, 0.25 }, { 1, 0.5 }, { 2, 0.125 } };
        const auto [th, thConfig] = exportWith("threshold", threshold);
        QCOMPARE(QString::fromStdString(thConfig["moeatlas_routing"]["thresholds"].dump()),
            QStringLiteral(R"({"0":0.25,"1":0.5,"2":0.125})"));
        QCOMPARE(thConfig["moeatlas_routing"]["mean_k"].get<double>(), 1.5);

        // Refused, naming the field, before anything is written.
        const fs::path dst = tmp.filePath(QStringLiteral("refused")).toStdString();
        const auto refused = [&](const RoutingRule& rule) {
            ExportOptions o;
            o.routing = rule;
            return requestErrorOf([&] { exportCheckpoint(src, p, dst, o); });
        };
        auto e = refused(exportRoutingRule(src, "top-k:5"));
        QCOMPARE(e.field, std::string("routing"));
        QVERIFY2(e.message.contains(QStringLiteral("routes up to 5 experts")), qPrintable(e.message));
        e = refused(exportRoutingRule(src, "threshold:1.5"));
        QVERIFY2(e.field == "routing" && e.message.contains(QStringLiteral("calibrate them on an atlas")),
            qPrintable(e.message));
        threshold.thresholds.erase(1);
        e = refused(threshold);
        QVERIFY2(e.field == "routing" && e.message.contains(QStringLiteral("no calibrated threshold for MoE layer 1")),
            qPrintable(e.message));
        threshold.thresholds[1] = 1.5;
        e = refused(threshold);
        QVERIFY2(e.field == "routing" && e.message.contains(QStringLiteral("[0, 1]")), qPrintable(e.message));
        RoutingRule built; // built in code, not parsed: the same checks
        built.kind = RoutingRule::Kind::ProbMoe;
        built.kMin = 3;
        built.kMax = 2;
        e = refused(built);
        QVERIFY2(e.field == "routing" && e.message.contains(QStringLiteral("KMIN 3 is greater than KMAX 2")),
            qPrintable(e.message));
        QCOMPARE(requestErrorOf([&] { exportRoutingRule(src, "top-p:0"); }).field, std::string("routing"));
        QVERIFY(!fs::exists(dst));
        QVERIFY(!fs::exists(tmp.filePath(QStringLiteral("refused.partial")).toStdString()));
    }
};

QTEST_GUILESS_MAIN(TestExport)
#include "tst_export.moc"
