// `moeatlas plan --criterion fisher_<form>` on a copy of the demo atlas after `moeatlas fisher`: the
// plan file is byte for byte the plan compiled here (compileSpecialist / compilePooledGeneralist /
// compileGeneralist) from the raw /fisher/<form>/experts and /fisher/tokens arrays; `eval --criteria
// fisher_mask` sweeps the same plans; an atlas without /fisher or the form, or a unit-only Fisher
// criterion, is refused with the atlas and what to run, and no plan file appears.
#include "atlas/atlas_file.h"
#include "checkpoint/checkpoint.h"
#include "plan/plan.h"
#include "plan/plan_costs.h"
#include "test_support.h"

#include <nlohmann/json.hpp>

#include <QDir>
#include <QFile>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>

using namespace moeatlas;

namespace {

QByteArray readBytes(const QString& path)
{
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
}

// The Fisher run's domain rows and pooled row of /fisher/<form>/experts, read as raw arrays.
struct RawFisher {
    std::vector<ScoreTable> domains;
    ScoreTable pooled;
};

RawFisher rawFisher(const QString& atlasPath, const std::string& form)
{
    const AtlasFile atlas = AtlasFile::openReadOnly(atlasPath.toStdString());
    const std::optional<AtlasResults> top = atlas.readResults("fisher");
    const std::optional<AtlasResults> group = atlas.readResults("fisher/" + form);
    if (!top || !group || !group->find("experts") || !top->find("tokens"))
        return {};
    const auto names = nlohmann::json::parse(top->paramsJson).at("domains").get<std::vector<std::string>>();
    const std::vector<double>& experts = group->find("experts")->values;
    const std::vector<double>& tokens = top->find("tokens")->values;
    const std::vector<int>& layers = atlas.model().moeLayers;
    const auto L = layers.size();
    const auto E = static_cast<std::size_t>(atlas.model().numExperts);
    RawFisher out;
    for (std::size_t r = 0; r < names.size(); ++r) {
        ScoreTable t { "fisher_" + form, r + 1 < names.size() ? names[r] : "generalist", layers, static_cast<int>(E),
            {}, tokens[r] };
        for (std::size_t l = 0; l < L; ++l)
            t.values.emplace_back(experts.begin() + static_cast<std::ptrdiff_t>((r * L + l) * E),
                experts.begin() + static_cast<std::ptrdiff_t>((r * L + l + 1) * E));
        (r + 1 < names.size() ? out.domains.emplace_back() : out.pooled) = std::move(t);
    }
    return out;
}

} // namespace

class TstCliFisherPlan : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void planEqualsRawArrays_data();
    void planEqualsRawArrays();
    void evalSweepEqualsPlan();
    void refused_data();
    void refused();

private:
    QString path(const QString& name) const { return m_dir.filePath(name); }
    // A writable copy of the demo atlas; with `fisherArgs`, after `moeatlas fisher COPY fisherArgs`.
    QString demoCopy(const QString& name, const QStringList& fisherArgs = {});

    QTemporaryDir m_dir;
    QString m_model; // the demo checkpoint
    QString m_atlas; // demo atlas with /fisher (mask, weight, grad_abs)
    QString m_noFisher; // demo atlas as committed
    QString m_maskOnly; // /fisher with the mask form only
};

QString TstCliFisherPlan::demoCopy(const QString& name, const QStringList& fisherArgs)
{
    const QString copy = path(name);
    if (!QFile::copy(test::sourcePath(QStringLiteral("resources/demo/demo.atlas.h5")), copy))
        return {};
    QFile::setPermissions(copy, QFile::ReadOwner | QFile::WriteOwner);
    if (fisherArgs.isEmpty())
        return copy;
    // One thread: faster than two on a loaded 2-core machine.
    const QStringList args = QStringList { QStringLiteral("fisher"), copy, QStringLiteral("--checkpoint"), m_model,
        QStringLiteral("--ablate"), QStringLiteral("none"), QStringLiteral("--threads"), QStringLiteral("1") }
        + fisherArgs;
    return test::runCli(args).exitCode == 0 ? copy : QString();
}

void TstCliFisherPlan::initTestCase()
{
    QVERIFY(m_dir.isValid());
    QVERIFY2(!test::cliExecutable().isEmpty(), "MOEATLAS_CLI is unset");
    m_model = test::sourcePath(QStringLiteral("resources/demo/model"));
    m_atlas = demoCopy(QStringLiteral("fisher.atlas.h5"), { QStringLiteral("--max-samples"), QStringLiteral("4") });
    QVERIFY(!m_atlas.isEmpty());
    m_noFisher = demoCopy(QStringLiteral("plain.atlas.h5"));
    QVERIFY(!m_noFisher.isEmpty());
    m_maskOnly = demoCopy(QStringLiteral("mask.atlas.h5"),
        { QStringLiteral("--max-samples"), QStringLiteral("1"), QStringLiteral("--forms"), QStringLiteral("mask"),
            QStringLiteral("--no-baselines") });
    QVERIFY(!m_maskOnly.isEmpty());
}

void TstCliFisherPlan::planEqualsRawArrays_data()
{
    QTest::addColumn<QString>("form");
    QTest::addColumn<QStringList>("options"); // method and budget
    const QStringList half { QStringLiteral("--keep-fraction"), QStringLiteral("0.5") };
    QTest::newRow("mask specialist code 0.5")
        << "mask" << QStringList { QStringLiteral("--domain"), QStringLiteral("code") } + half;
    QTest::newRow("mask generalist (pooled row) 0.5")
        << "mask" << QStringList { QStringLiteral("--generalist") } + half;
    QTest::newRow("mask generalist global 0.4")
        << "mask"
        << QStringList { QStringLiteral("--generalist"), QStringLiteral("--keep-fraction"), QStringLiteral("0.4"),
               QStringLiteral("--scope"), QStringLiteral("global") };
    QTest::newRow("weight specialist prose keep 4")
        << "weight"
        << QStringList { QStringLiteral("--domain"), QStringLiteral("prose"), QStringLiteral("--keep"),
               QStringLiteral("4") };
    QTest::newRow("grad_abs weighted generalist 0.75")
        << "grad_abs"
        << QStringList { QStringLiteral("--weight"), QStringLiteral("code=2"), QStringLiteral("--weight"),
               QStringLiteral("json=1"), QStringLiteral("--keep-fraction"), QStringLiteral("0.75") };
}

void TstCliFisherPlan::planEqualsRawArrays()
{
    QFETCH(QString, form);
    QFETCH(QStringList, options);
    const QString out = path(QStringLiteral("cli.plan.json"));
    QFile::remove(out);
    const test::ProcessResult r
        = test::runCli(QStringList { QStringLiteral("plan"), m_model, QStringLiteral("--atlas"), m_atlas,
                           QStringLiteral("--criterion"), QStringLiteral("fisher_") + form, QStringLiteral("-o"), out }
            + options);
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));

    // The same plan from the raw arrays and the flags, compiled here.
    const RawFisher raw = rawFisher(m_atlas, form.toStdString());
    QCOMPARE(raw.domains.size(), std::size_t(4));
    const PlanContext ctx = planContextFor(Checkpoint(m_model.toStdString()));
    Budget budget;
    const qsizetype keep = options.indexOf(QStringLiteral("--keep"));
    if (keep >= 0)
        budget = Budget { BudgetScope::Uniform, BudgetUnit::Experts, options[keep + 1].toDouble(), 0 };
    else
        budget = Budget { options.contains(QStringLiteral("global")) ? BudgetScope::Global : BudgetScope::Uniform,
            BudgetUnit::Fraction, options[options.indexOf(QStringLiteral("--keep-fraction")) + 1].toDouble(), 0 };
    Plan expected;
    if (options.contains(QStringLiteral("--domain"))) {
        expected = compileSpecialist(
            raw.domains, options[options.indexOf(QStringLiteral("--domain")) + 1].toStdString(), budget, ctx);
    } else if (options.contains(QStringLiteral("--weight"))) {
        expected = compileGeneralist(raw.domains, { { "code", 2.0 }, { "json", 1.0 } }, budget, ctx);
    } else {
        expected = compilePooledGeneralist(raw.domains, raw.pooled, budget, ctx);
        // The pooled row's weights are the Fisher run's tokens per domain.
        QCOMPARE(expected.domainWeights.size(), std::size_t(4));
    }
    expected.scoresSource = m_atlas.toStdString() + ":/fisher/" + form.toStdString() + "/experts";
    expected.atlas = std::filesystem::absolute(m_atlas.toStdString()).string();
    expected.configSha256 = AtlasFile::openReadOnly(m_atlas.toStdString()).model().configSha256;
    QCOMPARE(readBytes(out), QByteArray::fromStdString(planToJson(expected).dump(2) + "\n"));
}

void TstCliFisherPlan::evalSweepEqualsPlan()
{
    // The sweep's pooled generalist at sparsity 0.5 is the plan `plan --generalist --keep-fraction 0.5`
    // writes: both evaluated in one run give the same loss on every domain.
    const QString plan = path(QStringLiteral("generalist.plan.json"));
    QCOMPARE(
        test::runCli({ QStringLiteral("plan"), m_model, QStringLiteral("--atlas"), m_atlas,
                         QStringLiteral("--criterion"), QStringLiteral("fisher_mask"), QStringLiteral("--generalist"),
                         QStringLiteral("--keep-fraction"), QStringLiteral("0.5"), QStringLiteral("-o"), plan })
            .exitCode,
        0);
    const QString csv = path(QStringLiteral("sweep.csv"));
    const test::ProcessResult r
        = test::runCli({ QStringLiteral("eval"), m_model, QStringLiteral("--atlas"), m_atlas, QStringLiteral("--plan"),
            plan, QStringLiteral("--sparsity"), QStringLiteral("0.5"), QStringLiteral("--criteria"),
            QStringLiteral("fisher_mask"), QStringLiteral("--no-full"), QStringLiteral("--no-save"),
            QStringLiteral("--max-samples"), QStringLiteral("1"), QStringLiteral("--csv"), csv });
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    std::map<QString, std::map<QString, QString>> nll; // variant -> domain -> nll
    const QStringList lines = QString::fromUtf8(readBytes(csv)).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    QVERIFY(lines.size() > 1);
    const QStringList header = lines[0].split(QLatin1Char(','));
    const qsizetype variant = header.indexOf(QStringLiteral("variant")),
                    domain = header.indexOf(QStringLiteral("domain")), loss = header.indexOf(QStringLiteral("nll"));
    QVERIFY(variant >= 0 && domain >= 0 && loss >= 0);
    for (qsizetype i = 1; i < lines.size(); ++i) {
        const QStringList cells = lines[i].split(QLatin1Char(','));
        nll[cells[variant]][cells[domain]] = cells[loss];
    }
    for (const char* d : { "arith", "code", "json", "prose" })
        QVERIFY(nll.count(QStringLiteral("specialist:%1/fisher_mask@0.50").arg(QLatin1String(d))));
    const auto sweep = nll.find(QStringLiteral("generalist/fisher_mask@0.50"));
    QVERIFY(sweep != nll.end());
    QCOMPARE(sweep->second.size(), std::size_t(4));
    const auto fromPlan = std::find_if(
        nll.begin(), nll.end(), [](const auto& v) { return v.first.contains(QStringLiteral("generalist.plan")); });
    QVERIFY(fromPlan != nll.end());
    QCOMPARE(fromPlan->second, sweep->second);
}

void TstCliFisherPlan::refused_data()
{
    QTest::addColumn<QString>("atlas"); // fisher | plain | mask
    QTest::addColumn<QStringList>("options");
    QTest::addColumn<QStringList>("message"); // fragments; "ATLAS" = the atlas's path
    const QStringList half { QStringLiteral("--domain"), QStringLiteral("code"), QStringLiteral("--keep-fraction"),
        QStringLiteral("0.5") };
    QTest::newRow("atlas without /fisher")
        << "plain" << QStringList { QStringLiteral("--criterion"), QStringLiteral("fisher_mask") } + half
        << QStringList { QStringLiteral("ATLAS: no Fisher tables"),
               QStringLiteral("compute the Fisher importance of this atlas first") };
    QTest::newRow("form not computed")
        << "mask" << QStringList { QStringLiteral("--criterion"), QStringLiteral("fisher_weight") } + half
        << QStringList { QStringLiteral("ATLAS: the Fisher run did not compute the form 'weight'"),
               QStringLiteral("compute the Fisher forms mask, weight first") };
    QTest::newRow("unit-only criterion") << "fisher"
                                         << QStringList { QStringLiteral("--criterion"),
                                                QStringLiteral("fisher_activation") }
            + half << QStringList { QStringLiteral("ATLAS: criterion 'fisher_activation' ranks units, not experts") };
    QTest::newRow("unknown criterion lists the Fisher ones")
        << "fisher" << QStringList { QStringLiteral("--criterion"), QStringLiteral("fisher") } + half
        << QStringList { QStringLiteral("ATLAS: no scores for criterion 'fisher'"), QStringLiteral("fisher_grad_abs"),
               QStringLiteral("fisher_mask, fisher_weight") };
    QTest::newRow("domain the Fisher run does not have")
        << "fisher"
        << QStringList { QStringLiteral("--criterion"), QStringLiteral("fisher_mask"), QStringLiteral("--domain"),
               QStringLiteral("bio"), QStringLiteral("--keep"), QStringLiteral("8") }
        << QStringList { QStringLiteral("no scores for domain 'bio'") };
}

void TstCliFisherPlan::refused()
{
    QFETCH(QString, atlas);
    QFETCH(QStringList, options);
    QFETCH(QStringList, message);
    const QString file = atlas == QLatin1String("plain") ? m_noFisher
        : atlas == QLatin1String("mask")                 ? m_maskOnly
                                                         : m_atlas;
    const QString out = path(QStringLiteral("refused.plan.json"));
    const test::ProcessResult r = test::runCli(
        QStringList { QStringLiteral("plan"), m_model, QStringLiteral("--atlas"), file, QStringLiteral("-o"), out }
        + options);
    QVERIFY(r.exitCode != 0);
    for (QString fragment : message) {
        fragment.replace(QStringLiteral("ATLAS"), file);
        QVERIFY2(r.stdErr.contains(fragment), qPrintable(r.stdErr));
    }
    QVERIFY(!QFile::exists(out));
}

QTEST_GUILESS_MAIN(TstCliFisherPlan)
#include "tst_cli_fisher_plan.moc"
