// `moeatlas plan --dims` as a user runs it on a tiny model: capture, score and fisher an atlas, then
// dimension plans (dims only, and combined with expert pruning in one plan) in every scope and with
// every unit criterion, whose kept units a numpy re-computation from the atlas reproduces exactly
// (tests/cli/check_dim_plan.py); combined plans export (stock for IntDim-E, ragged otherwise) with the
// predicted bytes and load in transformers, and `eval` runs them. Every bad option or input is
// refused with a message naming the option or file, and no plan file appears.
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QTest>

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

// Loads an export in transformers; prints the loading problems, the loaded experts' widths per layer
// and whether the logits are finite.
const char* const kLoadCheck = R"PY(
import json, sys
import torch
import transformers
from transformers import AutoModelForCausalLM
transformers.utils.logging.set_verbosity_error()
model, info = AutoModelForCausalLM.from_pretrained(sys.argv[1], output_loading_info=True,
                                                   trust_remote_code=sys.argv[2] == "trust")
problems = {k: [str(x) for x in v] for k, v in info.items() if v}
widths = []
for layer in model.model.layers:
    experts = getattr(layer.mlp, "experts", None)
    if experts is None:
        widths.append(None)
    elif hasattr(experts, "down_proj"):
        widths.append([int(experts.down_proj.shape[-1])] * int(experts.down_proj.shape[0]))
    else:
        widths.append([int(e.down_proj.weight.shape[1]) for e in experts])
with torch.no_grad():
    logits = model(torch.tensor([[1, 2, 3, 4, 5]])).logits
print(json.dumps({"problems": problems, "widths": widths, "class": type(model).__name__,
                  "finite": bool(torch.isfinite(logits).all())}))
)PY";

} // namespace

class TstCliDims : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void plansMatchReference_data();
    void plansMatchReference();
    void combinedPlansExportLoadAndEvaluate();
    void badInputWritesNoPlan_data();
    void badInputWritesNoPlan();

private:
    QString path(const QString& name) const { return m_dir.filePath(name); }

    QTemporaryDir m_dir;
    QString m_model;
    QString m_atlas; // scored, with /fisher
    QString m_noFisher; // the same atlas before moeatlas fisher
};

void TstCliDims::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    QVERIFY2(!test::pythonExecutable().isEmpty(), "MOEATLAS_PYTHON is unset: the reference tests need the venv");
    m_model = path(QStringLiteral("model"));
    // qwen2_moe with a shared expert (never pruned), 2 MoE layers of 8 experts of 32 units.
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
    m_noFisher = path(QStringLiteral("nofisher.atlas.h5"));
    QCOMPARE(test::runCli({ QStringLiteral("capture"), m_model, QStringLiteral("-d"),
                              QStringLiteral("math=") + path(QStringLiteral("math.jsonl")), QStringLiteral("-d"),
                              QStringLiteral("code=") + path(QStringLiteral("code.jsonl")), QStringLiteral("--seq-len"),
                              QStringLiteral("64"), QStringLiteral("-o"), m_atlas })
                 .exitCode,
        0);
    QCOMPARE(test::runCli({ QStringLiteral("score"), m_atlas }).exitCode, 0);
    fs::copy_file(m_atlas.toStdString(), m_noFisher.toStdString());
    QCOMPARE(test::runCli({ QStringLiteral("fisher"), m_atlas, QStringLiteral("--ablate"), QStringLiteral("none") })
                 .exitCode,
        0);
}

void TstCliDims::plansMatchReference_data()
{
    QTest::addColumn<QStringList>("experts"); // expert-selection options; empty = dims only
    QTest::addColumn<QStringList>("dims");
    QTest::addColumn<QString>("domain"); // the Fisher row the plan must name ("" = pooled)
    const auto domain = [](const QString& d) { return QStringList { QStringLiteral("--domain"), d }; };
    const QStringList peuMath = QStringList {
        QStringLiteral("--criterion"), QStringLiteral("peu"), QStringLiteral("--keep-fraction"), QStringLiteral("0.5")
    } + domain(QStringLiteral("math"));
    QTest::newRow("IntDim-L, dims only, math, fisher_mask (default)")
        << QStringList()
        << QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-L"), QStringLiteral("--dim-sparsity"),
               QStringLiteral("0.5") }
            + domain(QStringLiteral("math"))
        << QStringLiteral("math");
    QTest::newRow("IntDim-G, dims only, pooled, fisher_grad_abs")
        << QStringList()
        << QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-G"), QStringLiteral("--dim-sparsity"),
               QStringLiteral("0.7"), QStringLiteral("--dim-criterion"), QStringLiteral("fisher_grad_abs"),
               QStringLiteral("--generalist") }
        << QString();
    QTest::newRow("IntDim-E, dims only, magnitude (one row)")
        << QStringList()
        << QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-E"), QStringLiteral("--dim-sparsity"),
               QStringLiteral("0.3"), QStringLiteral("--dim-criterion"), QStringLiteral("magnitude") }
        << QString();
    QTest::newRow("IntDim-E + peu specialist") << peuMath
                                               << QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-E"),
                                                      QStringLiteral("--dim-sparsity"), QStringLiteral("0.5") }
                                               << QStringLiteral("math");
    QTest::newRow("IntDim-G + frequency generalist, fisher_weight")
        << QStringList { QStringLiteral("--criterion"), QStringLiteral("frequency"), QStringLiteral("--generalist"),
               QStringLiteral("--keep"), QStringLiteral("3") }
        << QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-G"), QStringLiteral("--dim-sparsity"),
               QStringLiteral("0.6"), QStringLiteral("--dim-criterion"), QStringLiteral("fisher_weight") }
        << QString();
    QTest::newRow("IntDim-L + peu union, activation")
        << QStringList { QStringLiteral("--criterion"), QStringLiteral("peu"), QStringLiteral("--union"),
               QStringLiteral("2") }
        << QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-L"), QStringLiteral("--dim-sparsity"),
               QStringLiteral("0.4"), QStringLiteral("--dim-criterion"), QStringLiteral("activation") }
        << QString();
}

// The plan's units are the reference's; combined plans keep the experts the same command keeps
// without --dims, dims-only plans keep every expert; the predicted size shrinks by the dropped units.
void TstCliDims::plansMatchReference()
{
    QFETCH(QStringList, experts);
    QFETCH(QStringList, dims);
    QFETCH(QString, domain);
    const QString tag = QString::number(qHash(QTest::currentDataTag()));
    const QString plan = path(tag + QStringLiteral(".plan.json"));
    const test::ProcessResult r = test::runCli(
        QStringList { QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("-o"), plan } + experts
        + dims);
    QCOMPARE(r.exitCode, 0);
    const QString scope = dims.at(dims.indexOf(QStringLiteral("--dims")) + 1);
    QVERIFY2(r.stdOut.contains(scope + QStringLiteral(" at dimension sparsity")), qPrintable(r.stdOut));
    const nlohmann::json p = readJson(plan);
    QVERIFY(p.is_object());
    const nlohmann::json& d = p["dims"];
    QCOMPARE(QString::fromStdString(d["scope"].get<std::string>()), scope);
    const int criterion = static_cast<int>(dims.indexOf(QStringLiteral("--dim-criterion")));
    QCOMPARE(QString::fromStdString(d["criterion"].get<std::string>()),
        criterion < 0 ? QStringLiteral("fisher_mask") : dims.at(criterion + 1));
    QCOMPARE(QString::fromStdString(d["domain"].get<std::string>()), domain);
    QCOMPARE(d["sparsity"].get<double>(), dims.at(dims.indexOf(QStringLiteral("--dim-sparsity")) + 1).toDouble());
    QCOMPARE(d["intermediate_size"].get<int>(), 32);
    QCOMPARE(p["source"]["config_sha256"].get<std::string>().size(), std::size_t { 64 });

    if (experts.isEmpty()) {
        QCOMPARE(p["derivation"]["method"].get<std::string>(), std::string("dims"));
        for (const auto& l : p["layers"])
            QCOMPARE(l["keep"].get<std::vector<int>>(), (std::vector<int> { 0, 1, 2, 3, 4, 5, 6, 7 }));
    } else {
        const QString expertOnly = path(tag + QStringLiteral(".experts.json"));
        QCOMPARE(test::runCli(QStringList { QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas,
                                  QStringLiteral("-o"), expertOnly }
                     + experts)
                     .exitCode,
            0);
        const nlohmann::json e = readJson(expertOnly);
        QCOMPARE(p["layers"].dump(), e["layers"].dump());
        QCOMPARE(p["derivation"].dump(), e["derivation"].dump());
        QVERIFY(p["predicted"]["bytes_after"].get<double>() < e["predicted"]["bytes_after"].get<double>());
    }
    const auto checked = test::runPython(QStringLiteral("tests/cli/check_dim_plan.py"),
        { QStringLiteral("--atlas"), m_atlas, QStringLiteral("--plan"), plan });
    qInfo("%s", qPrintable(checked.stdOut.trimmed()));
    QVERIFY2(checked.exitCode == 0, qPrintable(checked.stdErr));
}

// One plan document drops experts and units; IntDim-E exports as a stock checkpoint, IntDim-G as a
// ragged one; both hold exactly the predicted bytes, load with the plan's widths and evaluate.
void TstCliDims::combinedPlansExportLoadAndEvaluate()
{
    for (const QString& scope : { QStringLiteral("IntDim-E"), QStringLiteral("IntDim-G") }) {
        const bool ragged = scope != QLatin1String("IntDim-E");
        const QString plan = path(scope + QStringLiteral(".plan.json"));
        QCOMPARE(
            test::runCli({ QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("--criterion"),
                             QStringLiteral("peu"), QStringLiteral("--domain"), QStringLiteral("code"),
                             QStringLiteral("--keep"), QStringLiteral("4"), QStringLiteral("--dims"), scope,
                             QStringLiteral("--dim-sparsity"), QStringLiteral("0.75"), QStringLiteral("-o"), plan })
                .exitCode,
            0);
        const nlohmann::json p = readJson(plan);
        const QString out = path(scope);
        const test::ProcessResult exported = test::runCli(
            { QStringLiteral("export"), m_model, QStringLiteral("--plan"), plan, QStringLiteral("-o"), out });
        QCOMPARE(exported.exitCode, 0);
        QVERIFY2(exported.stdOut.contains(ragged ? QStringLiteral("RAGGED") : QStringLiteral("UNIFORM export")),
            qPrintable(exported.stdOut));

        const test::ProcessResult inspect = test::runCli({ QStringLiteral("inspect"), out, QStringLiteral("--json") });
        QCOMPARE(inspect.exitCode, 0);
        const nlohmann::json info = nlohmann::json::parse(inspect.stdOut.toStdString(), nullptr, false);
        QVERIFY2(info.is_object(), qPrintable(inspect.stdOut));
        QCOMPARE(info["total"]["bytes"].get<uint64_t>(), p["predicted"]["bytes_after"].get<uint64_t>());

        const test::ProcessResult load = test::runProcess(test::pythonExecutable(),
            { QStringLiteral("-c"), QString::fromUtf8(kLoadCheck), out,
                ragged ? QStringLiteral("trust") : QStringLiteral("stock") });
        QVERIFY2(load.exitCode == 0, qPrintable(load.stdErr));
        const nlohmann::json check = nlohmann::json::parse(
            load.stdOut.trimmed().split(QLatin1Char('\n')).last().toStdString(), nullptr, false);
        QVERIFY2(check.is_object(), qPrintable(load.stdOut));
        QVERIFY2(check["problems"].empty(), check["problems"].dump().c_str());
        QVERIFY(check["finite"].get<bool>());
        QCOMPARE(
            QString::fromStdString(check["class"].get<std::string>()).startsWith(QStringLiteral("MoeAtlas")), ragged);
        for (std::size_t i = 0; i < p["layers"].size(); ++i)
            QCOMPARE(check["widths"][p["layers"][i]["layer"].get<std::size_t>()].dump(),
                p["dims"]["layers"][i]["widths"].dump());

        const test::ProcessResult eval = test::runCli({ QStringLiteral("eval"), QStringLiteral("--atlas"), m_atlas,
            QStringLiteral("--plan"), plan, QStringLiteral("--no-save") });
        QCOMPARE(eval.exitCode, 0);
        QVERIFY2(eval.stdOut.contains(scope + QStringLiteral(".plan.json")), qPrintable(eval.stdOut));
    }
}

void TstCliDims::badInputWritesNoPlan_data()
{
    QTest::addColumn<QStringList>("args");
    QTest::addColumn<QStringList>("keywords");
    const QString atlas = path(QStringLiteral("run.atlas.h5"));
    const QStringList base { QStringLiteral("--atlas"), atlas };
    const QStringList half { QStringLiteral("--dims"), QStringLiteral("IntDim-L"), QStringLiteral("--dim-sparsity"),
        QStringLiteral("0.5") };
    QTest::newRow("atlas without /fisher")
        << QStringList { QStringLiteral("--atlas"), path(QStringLiteral("nofisher.atlas.h5")) } + half
        << QStringList { path(QStringLiteral("nofisher.atlas.h5")), QStringLiteral("/fisher"),
               QStringLiteral("compute its Fisher importance first") };
    QTest::newRow("unknown scope") << base
            + QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-X"), QStringLiteral("--dim-sparsity"),
                  QStringLiteral("0.5") }
                                   << QStringList { QStringLiteral("--dims"), QStringLiteral("'IntDim-X'"),
                                          QStringLiteral("IntDim-E, IntDim-L or IntDim-G") };
    QTest::newRow("unknown criterion")
        << base + half + QStringList { QStringLiteral("--dim-criterion"), QStringLiteral("fisher_foo") }
        << QStringList { QStringLiteral("--dim-criterion: "), QStringLiteral("'fisher_foo'"),
               QStringLiteral("fisher_mask, fisher_weight, fisher_grad_abs, activation or magnitude") };
    for (const QString& s : { QStringLiteral("1"), QStringLiteral("-0.1"), QStringLiteral("1.5") })
        QTest::addRow("sparsity %s", qPrintable(s)) << base
                + QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-E"), QStringLiteral("--dim-sparsity"),
                      s } << QStringList { QStringLiteral("--dim-sparsity"), QStringLiteral("in [0, 1)") };
    QTest::newRow("no sparsity") << base + QStringList { QStringLiteral("--dims"), QStringLiteral("IntDim-G") }
                                 << QStringList { QStringLiteral("--dims needs --dim-sparsity") };
    QTest::newRow("sparsity without scope")
        << base + QStringList { QStringLiteral("--dim-sparsity"), QStringLiteral("0.5") }
        << QStringList { QStringLiteral("need --dims") };
    QTest::newRow("scores file") << QStringList { m_model, QStringLiteral("--scores"), path(QStringLiteral("s.json")) }
            + half << QStringList { QStringLiteral("--dims reads unit scores"), QStringLiteral("--atlas") };
    QTest::newRow("domain weights") << base + half
            + QStringList { QStringLiteral("--criterion"), QStringLiteral("peu"), QStringLiteral("--keep"),
                  QStringLiteral("4"), QStringLiteral("--weight"), QStringLiteral("math=2") }
                                    << QStringList { QStringLiteral("--weight"), QStringLiteral("--generalist") };
    QTest::newRow("domain without Fisher row")
        << base + half + QStringList { QStringLiteral("--domain"), QStringLiteral("bio") }
        << QStringList { atlas, QStringLiteral("/fisher/mask has no domain 'bio'") };
    QTest::newRow("expert budget without criterion")
        << base + half + QStringList { QStringLiteral("--keep"), QStringLiteral("4") }
        << QStringList { QStringLiteral("--keep"), QStringLiteral("needs --criterion") };
}

void TstCliDims::badInputWritesNoPlan()
{
    QFETCH(QStringList, args);
    QFETCH(QStringList, keywords);
    const QString plan = path(QStringLiteral("refused.plan.json"));
    const test::ProcessResult r = test::runProcess(
        test::cliExecutable(), QStringList { QStringLiteral("plan"), QStringLiteral("-o"), plan } + args);
    QVERIFY2(r.exitCode != 0 && r.exitCode != -1, qPrintable(r.stdErr));
    QVERIFY2(r.stdErr.contains(QStringLiteral("moeatlas: error: ")), qPrintable(r.stdErr));
    for (const QString& k : keywords)
        QVERIFY2(r.stdErr.contains(k), qPrintable(QStringLiteral("no '%1' in: %2").arg(k, r.stdErr)));
    QVERIFY(!fs::exists(plan.toStdString()));
    QVERIFY(!fs::exists(plan.toStdString() + ".partial"));
}

QTEST_GUILESS_MAIN(TstCliDims)
#include "tst_cli_dims.moc"
