// The whole CLI pipeline on a tiny model, as a user runs it: generate a qwen2_moe checkpoint (with
// a shared expert) and two calibration domains, capture with --expert-norms, score, plan a 50%
// specialist straight from the atlas, export, inspect the export (experts halved, bytes as the
// plan predicted) and load it in stock transformers. Also the pipeline's guard rails: a second
// score is a no-op, reap without expert norms and a checkpoint of another config are refused.
#include "atlas/atlas_file.h"
#include "test_support.h"
#include "util/sha256.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace moeatlas;

namespace {

nlohmann::json readJson(const QString& path)
{
    std::ifstream in(path.toStdString());
    return nlohmann::json::parse(in, nullptr, false);
}

// Loads an export in stock transformers and reports the loading problems and the expert count.
const char* const kLoadCheck = R"PY(
import json, sys
import torch
import transformers
from transformers import AutoModelForCausalLM
transformers.utils.logging.set_verbosity_error()
model, info = AutoModelForCausalLM.from_pretrained(sys.argv[1], output_loading_info=True)
problems = {k: [str(x) for x in v] for k, v in info.items() if v}
with torch.no_grad():
    logits = model(torch.tensor([[1, 2, 3, 4, 5]])).logits
c = model.config
print(json.dumps({"problems": problems, "num_experts": getattr(c, "num_experts", None),
                  "finite": bool(torch.isfinite(logits).all())}))
)PY";

} // namespace

class TstCliPipeline : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void scoreTwiceIsUpToDate();
    void specialistFromAtlasExportsAndLoads();
    void generalistAndUnionFromAtlas();
    void reapWithoutExpertNormsIsRefused();
    void exportRefusesAnotherConfig();
    void evalSweepIntoCsvAndAtlas();
    void evalBadInputLosesNothing_data();
    void evalBadInputLosesNothing();

private:
    QString path(const QString& name) const { return m_dir.filePath(name); }

    QTemporaryDir m_dir;
    QString m_model;
    QString m_atlas; // captured with --expert-norms, scored
    QString m_atlasNoNorms; // captured without them, scored
};

void TstCliPipeline::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
    m_model = path(QStringLiteral("model"));
    QCOMPARE(test::runCli(
                 { QStringLiteral("generate"), QStringLiteral("-o"), m_model, QStringLiteral("--arch"),
                     QStringLiteral("qwen2_moe"), QStringLiteral("--layers"), QStringLiteral("2"),
                     QStringLiteral("--hidden"), QStringLiteral("64"), QStringLiteral("--heads"), QStringLiteral("4"),
                     QStringLiteral("--kv-heads"), QStringLiteral("2"), QStringLiteral("--head-dim"),
                     QStringLiteral("16"), QStringLiteral("--experts"), QStringLiteral("8"), QStringLiteral("--top-k"),
                     QStringLiteral("2"), QStringLiteral("--expert-width"), QStringLiteral("32"),
                     QStringLiteral("--shared-width"), QStringLiteral("64"), QStringLiteral("--vocab"),
                     QStringLiteral("256"), QStringLiteral("--seed"), QStringLiteral("7") })
                 .exitCode,
        0);
    // Two random domains (different seeds), a few hundred tokens each.
    for (const auto& [name, seed] :
        { std::pair { QStringLiteral("math"), 11 }, std::pair { QStringLiteral("code"), 12 } })
        QCOMPARE(
            test::runCli({ QStringLiteral("generate"), QStringLiteral("--vocab"), QStringLiteral("256"),
                             QStringLiteral("--seed"), QString::number(seed), QStringLiteral("--calibration"),
                             path(name + QStringLiteral(".jsonl")), QStringLiteral("--calibration-docs"),
                             QStringLiteral("6"), QStringLiteral("--calibration-doc-tokens"), QStringLiteral("64") })
                .exitCode,
            0);
    m_atlas = path(QStringLiteral("run.atlas.h5"));
    m_atlasNoNorms = path(QStringLiteral("plain.atlas.h5"));
    for (const QString& atlas : { m_atlas, m_atlasNoNorms }) {
        QStringList args { QStringLiteral("capture"), m_model, QStringLiteral("-d"),
            QStringLiteral("math=") + path(QStringLiteral("math.jsonl")), QStringLiteral("-d"),
            QStringLiteral("code=") + path(QStringLiteral("code.jsonl")), QStringLiteral("--seq-len"),
            QStringLiteral("64"), QStringLiteral("-o"), atlas };
        if (atlas == m_atlas)
            args << QStringLiteral("--expert-norms");
        QCOMPARE(test::runCli(args).exitCode, 0);
        QCOMPARE(test::runCli({ QStringLiteral("score"), atlas }).exitCode, 0);
    }
}

void TstCliPipeline::scoreTwiceIsUpToDate()
{
    const test::ProcessResult r = test::runCli({ QStringLiteral("score"), m_atlas });
    QCOMPARE(r.exitCode, 0);
    const QString said = r.stdOut + r.stdErr;
    QVERIFY2(said.contains(QStringLiteral("up to date")), qPrintable(said));
}

void TstCliPipeline::specialistFromAtlasExportsAndLoads()
{
    // No checkpoint argument: the plan takes the one the atlas was captured from.
    const QString plan = path(QStringLiteral("math.plan.json"));
    QCOMPARE(test::runCli({ QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("--criterion"),
                              QStringLiteral("peu"), QStringLiteral("--domain"), QStringLiteral("math"),
                              QStringLiteral("--keep-fraction"), QStringLiteral("0.5"), QStringLiteral("-o"), plan })
                 .exitCode,
        0);
    const nlohmann::json p = readJson(plan);
    QVERIFY(p.is_object());
    QCOMPARE(p["derivation"]["method"].get<std::string>(), std::string("specialist"));
    QCOMPARE(p["derivation"]["criterion"].get<std::string>(), std::string("peu"));
    QCOMPARE(p["source"]["atlas"].get<std::string>(), fs::absolute(m_atlas.toStdString()).string());
    QCOMPARE(p["source"]["config_sha256"].get<std::string>().size(), std::size_t { 64 });
    QCOMPARE(p["layers"].size(), std::size_t { 2 });
    for (const auto& l : p["layers"])
        QCOMPARE(l["keep"].size(), std::size_t { 4 });

    const QString out = path(QStringLiteral("math-50"));
    QCOMPARE(
        test::runCli({ QStringLiteral("export"), m_model, QStringLiteral("--plan"), plan, QStringLiteral("-o"), out })
            .exitCode,
        0);
    const test::ProcessResult inspect = test::runCli({ QStringLiteral("inspect"), out, QStringLiteral("--json") });
    QCOMPARE(inspect.exitCode, 0);
    const nlohmann::json info = nlohmann::json::parse(inspect.stdOut.toStdString(), nullptr, false);
    QVERIFY2(info.is_object(), qPrintable(inspect.stdOut));
    QCOMPARE(info["num_experts"].get<int>(), 4);
    const double predicted = p["predicted"]["bytes_after"].get<double>();
    const double actual = info["total"]["bytes"].get<double>();
    QVERIFY2(predicted > 0 && std::abs(actual - predicted) <= 0.01 * predicted,
        qPrintable(QStringLiteral("export holds %1 bytes, plan predicted %2").arg(actual).arg(predicted)));
    QVERIFY(p["predicted"]["bytes_before"].get<double>() > predicted);

    const test::ProcessResult load
        = test::runProcess(test::pythonExecutable(), { QStringLiteral("-c"), QString::fromUtf8(kLoadCheck), out });
    QVERIFY2(load.exitCode == 0, qPrintable(load.stdErr));
    const QStringList lines = load.stdOut.trimmed().split(QLatin1Char('\n'));
    const nlohmann::json check = nlohmann::json::parse(lines.last().toStdString(), nullptr, false);
    QVERIFY2(check.is_object(), qPrintable(load.stdOut));
    QVERIFY2(check["problems"].empty(), check["problems"].dump().c_str());
    QCOMPARE(check["num_experts"].get<int>(), 4);
    QVERIFY(check["finite"].get<bool>());
}

void TstCliPipeline::generalistAndUnionFromAtlas()
{
    const QString generalist = path(QStringLiteral("generalist.plan.json"));
    QCOMPARE(test::runCli({ QStringLiteral("plan"), m_model, QStringLiteral("--atlas"), m_atlas,
                              QStringLiteral("--criterion"), QStringLiteral("reap"), QStringLiteral("--generalist"),
                              QStringLiteral("--keep"), QStringLiteral("4"), QStringLiteral("-o"), generalist })
                 .exitCode,
        0);
    const nlohmann::json g = readJson(generalist);
    // Token-weighted by default: the weights are the domains' token counts from the atlas.
    QCOMPARE(g["derivation"]["domain_weights"].size(), std::size_t { 2 });
    QVERIFY(g["derivation"]["domain_weights"]["math"].get<double>() > 1);

    const QString weighted = path(QStringLiteral("weighted.plan.json"));
    QCOMPARE(test::runCli({ QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("--criterion"),
                              QStringLiteral("frequency"), QStringLiteral("--weight"), QStringLiteral("math=2"),
                              QStringLiteral("--weight"), QStringLiteral("code=1"), QStringLiteral("--keep"),
                              QStringLiteral("4"), QStringLiteral("-o"), weighted })
                 .exitCode,
        0);
    QCOMPARE(readJson(weighted)["derivation"]["domain_weights"]["math"].get<double>(), 2.0);

    const QString unionPlan = path(QStringLiteral("union.plan.json"));
    QCOMPARE(test::runCli({ QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("--criterion"),
                              QStringLiteral("peu"), QStringLiteral("--union"), QStringLiteral("2"),
                              QStringLiteral("-o"), unionPlan })
                 .exitCode,
        0);
    for (const auto& l : readJson(unionPlan)["layers"])
        QVERIFY(l["keep"].size() >= 2 && l["keep"].size() <= 4);
}

void TstCliPipeline::reapWithoutExpertNormsIsRefused()
{
    const QString plan = path(QStringLiteral("reap.plan.json"));
    const test::ProcessResult r = test::runCli({ QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlasNoNorms,
        QStringLiteral("--criterion"), QStringLiteral("reap"), QStringLiteral("--domain"), QStringLiteral("math"),
        QStringLiteral("--keep"), QStringLiteral("4"), QStringLiteral("-o"), plan });
    QVERIFY(r.exitCode != 0);
    QVERIFY2(r.stdErr.contains(QStringLiteral("capture again recording expert output norms")), qPrintable(r.stdErr));
    QVERIFY(!fs::exists(plan.toStdString()));
}

void TstCliPipeline::exportRefusesAnotherConfig()
{
    const QString plan = path(QStringLiteral("math.plan.json"));
    QVERIFY(fs::exists(plan.toStdString()));
    // Same tensors, config.json with different bytes (still valid, same shapes).
    const fs::path other = path(QStringLiteral("other-model")).toStdString();
    fs::copy(m_model.toStdString(), other, fs::copy_options::recursive);
    {
        std::ofstream config(other / "config.json", std::ios::app);
        config << "\n";
    }
    const QString out = path(QStringLiteral("other-50"));
    const test::ProcessResult r = test::runCli({ QStringLiteral("export"), QString::fromStdString(other.string()),
        QStringLiteral("--plan"), plan, QStringLiteral("-o"), out });
    QVERIFY(r.exitCode != 0);
    QVERIFY2(r.stdErr.contains(QStringLiteral("config.json")) && r.stdErr.contains(QStringLiteral("atlas")),
        qPrintable(r.stdErr));
    QVERIFY(!fs::exists(out.toStdString()));
}

// A sweep from the atlas: full model + per-domain specialists + generalist per criterion and
// sparsity, plus a plan file; the CSV and the atlas's /evaluation/<label> hold the same table.
void TstCliPipeline::evalSweepIntoCsvAndAtlas()
{
    const QString plan = path(QStringLiteral("math.plan.json"));
    QVERIFY(fs::exists(plan.toStdString()));
    const QString csv = path(QStringLiteral("sweep.csv"));
    const test::ProcessResult r
        = test::runCli({ QStringLiteral("eval"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("--sparsity"),
            QStringLiteral("0.25,0.5"), QStringLiteral("--criteria"), QStringLiteral("peu,frequency"),
            QStringLiteral("--random-plans"), QStringLiteral("2"), QStringLiteral("--plan"), plan,
            QStringLiteral("--csv"), csv, QStringLiteral("--label"), QStringLiteral("sweep") });
    QCOMPARE(r.exitCode, 0);
    // 1 full + 1 plan + 2 criteria x 2 sparsities x (2 specialists + 1 generalist) + 2 x 2 random.
    const int variants = 1 + 1 + 2 * 2 * 3 + 4;
    std::ifstream in(csv.toStdString());
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);)
        lines.push_back(line);
    QCOMPARE(lines.size(), std::size_t { 1 + 2 * variants });
    QVERIFY(std::any_of(lines.begin(), lines.end(), [](const std::string& l) {
        return l.rfind("specialist:code/frequency@0.25,specialist,frequency,code,0.25,12,", 0) == 0;
    }));
    QVERIFY(r.stdOut.contains(QStringLiteral("math.plan.json")));

    const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
    const auto stored = atlas.readResults("evaluation/sweep");
    QVERIFY(stored.has_value());
    QCOMPARE(stored->find("nll")->dims, (std::vector<uint64_t> { static_cast<uint64_t>(variants), 2 }));
    // The scores and statistics are still there next to the evaluation.
    QVERIFY(atlas.readResults("scores/peu").has_value());
}

void TstCliPipeline::evalBadInputLosesNothing_data()
{
    QTest::addColumn<QStringList>("args");
    QTest::addColumn<QString>("message");
    const QString atlas = path(QStringLiteral("run.atlas.h5"));
    const QString noNorms = path(QStringLiteral("plain.atlas.h5"));
    QTest::newRow("no tokens") << QStringList { path(QStringLiteral("model")) } << QStringLiteral("--atlas");
    QTest::newRow("sparsity out of range")
        << QStringList { QStringLiteral("--atlas"), atlas, QStringLiteral("--sparsity"), QStringLiteral("1.5") }
        << QStringLiteral("--sparsity: sparsity 1.5");
    QTest::newRow("criterion not scored") << QStringList { QStringLiteral("--atlas"), noNorms,
        QStringLiteral("--sparsity"), QStringLiteral("0.5"), QStringLiteral("--criteria"), QStringLiteral("reap") }
                                          << QStringLiteral("recording expert output norms");
    QTest::newRow("plan for another expert count")
        << QStringList { QStringLiteral("--atlas"), atlas, QStringLiteral("--plan"), path(QStringLiteral("e16.json")) }
        << QStringLiteral("16 experts");
    QTest::newRow("plan keeps fewer than top-k")
        << QStringList { QStringLiteral("--atlas"), atlas, QStringLiteral("--plan"), path(QStringLiteral("k1.json")) }
        << QStringLiteral("top-k");
    QTest::newRow("csv directory missing") << QStringList { QStringLiteral("--atlas"), atlas, QStringLiteral("--csv"),
        path(QStringLiteral("no/such/dir/t.csv")) }
                                           << QStringLiteral("no/such/dir");
}

// Each refused without touching the atlas (same bytes) and without leaving a CSV.
void TstCliPipeline::evalBadInputLosesNothing()
{
    QFETCH(QStringList, args);
    QFETCH(QString, message);
    auto planWith = [](int experts, std::vector<int> keep) {
        return nlohmann::json { { "format", "moeatlas-plan" }, { "version", 1 },
            { "source", { { "num_experts", experts }, { "top_k", 2 } } },
            { "derivation", { { "method", "specialist" }, { "criterion", "test" } } },
            { "layers", { { { "layer", 0 }, { "keep", keep } }, { { "layer", 1 }, { "keep", keep } } } } };
    };
    std::ofstream(path(QStringLiteral("e16.json")).toStdString()) << planWith(16, { 0, 1, 2, 3 }).dump();
    std::ofstream(path(QStringLiteral("k1.json")).toStdString()) << planWith(8, { 5 }).dump();
    const std::string before = sha256File(m_atlas.toStdString()),
                      beforeNoNorms = sha256File(m_atlasNoNorms.toStdString());
    const test::ProcessResult r
        = test::runProcess(test::cliExecutable(), QStringList { QStringLiteral("eval") } + args);
    QVERIFY(r.exitCode != 0 && r.exitCode != -1);
    QVERIFY2(r.stdErr.contains(message), qPrintable(r.stdErr));
    QCOMPARE(sha256File(m_atlas.toStdString()), before);
    QCOMPARE(sha256File(m_atlasNoNorms.toStdString()), beforeNoNorms);
    QVERIFY(!fs::exists(path(QStringLiteral("no/such/dir")).toStdString()));
}

QTEST_GUILESS_MAIN(TstCliPipeline)
#include "tst_cli_pipeline.moc"
