// BudgetPanel with the atlas's Fisher tables: expert-level Fisher as a plan criterion equals the
// planner on /fisher/<form>/experts; dimension pruning (scope, unit sparsity, unit-score form)
// compiled on the worker equals compileDimPlan on the atlas's unit scores, with widths in the
// predicted bytes; the saved file is the plan JSON of that reference; the latest slider position
// wins; byte targets give way to "Drop %" while dims are on.
#include "atlas_document.h"
#include "budget_panel.h"
#include "checkpoint/checkpoint.h"
#include "fisher/fisher_store.h"
#include "plan/atlas_scores.h"
#include "plan/dim_plan.h"
#include "plan/plan_costs.h"
#include "test_support.h"
#include "views_fixture.h"

#include <nlohmann/json.hpp>

#include <QSignalSpy>
#include <QSlider>
#include <QTemporaryDir>
#include <QTest>

#include <filesystem>
#include <fstream>

using namespace moeatlas;
using namespace moeatlas::views;

Q_DECLARE_METATYPE(moeatlas::Plan)

namespace {

Budget fraction(int droppedPercent)
{
    return Budget { BudgetScope::Uniform, BudgetUnit::Fraction, 1.0 - droppedPercent / 100.0, 0 };
}

nlohmann::json readJson(const QString& path)
{
    std::ifstream in(path.toStdString());
    return nlohmann::json::parse(in, nullptr, false);
}

// The unit scores compileDimPlan takes, as `moeatlas plan --dims` reads them (no views code involved).
UnitScoreTable referenceUnits(const QString& atlas, const std::string& form, const std::string& domain)
{
    return readFisherUnitScores(AtlasFile::openReadOnly(atlas.toStdString()), form, domain);
}

DimScope scopeOf(const QString& name)
{
    return parseDimScope(name.toStdString(), "test");
}

} // namespace

class TstBudgetDims : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void fisherExpertCriterion_data();
    void fisherExpertCriterion();
    void dimPlanEqualsCompileDimPlan_data();
    void dimPlanEqualsCompileDimPlan();
    void savedPlanHasDims();
    void savedPlanEqualsCli_data();
    void savedPlanEqualsCli();
    void savedFisherExpertPlanEqualsCli_data();
    void savedFisherExpertPlanEqualsCli();
    void customWeightsRefusedWithDims();
    void latestSliderPositionWins();
    void targetsGiveWayToDims();
    void noFisherNoDims();

private:
    // The plan the panel should show: expert plan with the panel's provenance, then dims.
    Plan reference(
        const QString& domain, int expertPercent, const QString& scope, int unitPercent, const QString& form) const;
    // Sets the panel up and waits for the worker.
    static bool configure(BudgetPanel& panel, const QString& domain, int expertPercent, const QString& scope,
        int unitPercent, const QString& form);

    QTemporaryDir m_dir;
    QString m_plain;
    QString m_atlas;
    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    AtlasScores m_peu;
    PlanContext m_ctx;
};

void TstBudgetDims::initTestCase()
{
    qRegisterMetaType<moeatlas::Plan>();
    QVERIFY(m_dir.isValid());
    QString error;
    m_plain = test::buildViewsAtlas(m_dir.path(), &error);
    QVERIFY2(!m_plain.isEmpty(), qPrintable(error));
    m_atlas = m_dir.filePath(QStringLiteral("fisher.atlas.h5"));
    QVERIFY(QFile::copy(m_plain, m_atlas));
    QVERIFY2(test::addFisherTables(m_atlas, &error, QStringLiteral("none")), qPrintable(error));
    m_snapshot = loadAtlasSnapshot(m_atlas);
    QVERIFY(m_snapshot->fisher && m_snapshot->hasCosts);
    m_peu = readAtlasScores(m_atlas.toStdString(), "peu");
    m_ctx = planContextFor(Checkpoint(m_dir.filePath(QStringLiteral("model")).toStdString()));
    QVERIFY(!m_ctx.costs.unitBytes.empty());
}

Plan TstBudgetDims::reference(
    const QString& domain, int expertPercent, const QString& scope, int unitPercent, const QString& form) const
{
    Plan experts = domain.isEmpty()
        ? compilePooledGeneralist(m_peu.domains, m_peu.pooled, fraction(expertPercent), m_ctx)
        : compileSpecialist(m_peu.domains, domain.toStdString(), fraction(expertPercent), m_ctx);
    experts.scoresSource = m_atlas.toStdString() + ":/scores/peu";
    experts.atlas = std::filesystem::absolute(m_atlas.toStdString()).string();
    experts.configSha256 = m_snapshot->model.configSha256;
    return compileDimPlan(experts, referenceUnits(m_atlas, form.toStdString(), domain.toStdString()),
        DimBudget { scopeOf(scope), unitPercent / 100.0 }, m_ctx);
}

bool TstBudgetDims::configure(BudgetPanel& panel, const QString& domain, int expertPercent, const QString& scope,
    int unitPercent, const QString& form)
{
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(domain);
    panel.setSparsityPercent(expertPercent);
    panel.setDimScope(scopeOf(scope));
    panel.setDimForm(form);
    panel.setDimSparsityPercent(unitPercent);
    panel.setDimsEnabled(true);
    return QTest::qWaitFor([&] { return !panel.isCompiling(); }, 20000) && panel.plan().has_value();
}

void TstBudgetDims::fisherExpertCriterion_data()
{
    QTest::addColumn<QString>("form");
    QTest::addColumn<QString>("domain");
    QTest::addColumn<int>("percent");
    QTest::newRow("mask generalist 50%") << QStringLiteral("mask") << QString() << 50;
    QTest::newRow("mask math 25%") << QStringLiteral("mask") << QStringLiteral("math") << 25;
    QTest::newRow("weight code 75%") << QStringLiteral("weight") << QStringLiteral("code") << 75;
    QTest::newRow("grad_abs generalist 60%") << QStringLiteral("grad_abs") << QString() << 60;
}

void TstBudgetDims::fisherExpertCriterion()
{
    QFETCH(QString, form);
    QFETCH(QString, domain);
    QFETCH(int, percent);
    // The reference tables from the raw /fisher arrays: [D + 1, L, E] expert sums, Fisher tokens.
    const AtlasFile file = AtlasFile::openReadOnly(m_atlas.toStdString());
    const std::optional<AtlasResults> formGroup = file.readResults("fisher/" + form.toStdString());
    const std::optional<AtlasResults> fisherGroup = file.readResults("fisher");
    QVERIFY(formGroup && fisherGroup);
    const AtlasArray* experts = formGroup->find("experts");
    const AtlasArray* tokens = fisherGroup->find("tokens");
    const std::vector<std::string> names { "math", "code", "pooled" };
    std::vector<ScoreTable> tables;
    for (std::size_t r = 0; r < 3; ++r) {
        ScoreTable t { "fisher_" + form.toStdString(), names[r], m_snapshot->model.moeLayers, 8, {},
            tokens->values[r] };
        for (std::size_t l = 0; l < 3; ++l)
            t.values.emplace_back(experts->values.begin() + static_cast<std::ptrdiff_t>((r * 3 + l) * 8),
                experts->values.begin() + static_cast<std::ptrdiff_t>((r * 3 + l + 1) * 8));
        tables.push_back(std::move(t));
    }
    const ScoreTable pooled = tables.back();
    tables.pop_back();
    const Plan expected = domain.isEmpty() ? compilePooledGeneralist(tables, pooled, fraction(percent), m_ctx)
                                           : compileSpecialist(tables, domain.toStdString(), fraction(percent), m_ctx);

    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("fisher_") + form);
    QCOMPARE(panel.criterion(), QStringLiteral("fisher_") + form);
    panel.setTargetDomain(domain);
    panel.setSparsityPercent(percent);
    QVERIFY(panel.plan());
    QCOMPARE(panel.plan()->keep, expected.keep);
    QCOMPARE(panel.plan()->criterion, "fisher_" + form.toStdString());
    QCOMPARE(panel.plan()->domainWeights, expected.domainWeights);
    QCOMPARE(panel.plan()->bytesAfter, expected.bytesAfter);
    QCOMPARE(panel.plan()->scoresSource, m_atlas.toStdString() + ":/fisher/" + form.toStdString() + "/experts");
}

void TstBudgetDims::dimPlanEqualsCompileDimPlan_data()
{
    QTest::addColumn<QString>("domain");
    QTest::addColumn<int>("expertPercent");
    QTest::addColumn<QString>("scope");
    QTest::addColumn<int>("unitPercent");
    QTest::addColumn<QString>("form");
    QTest::newRow("E mask generalist 50/50") << QString() << 50 << "IntDim-E" << 50 << "mask";
    QTest::newRow("L mask math 25/50") << "math" << 25 << "IntDim-L" << 50 << "mask";
    QTest::newRow("G grad_abs generalist 50/75") << QString() << 50 << "IntDim-G" << 75 << "grad_abs";
    QTest::newRow("G weight code 0/50") << "code" << 0 << "IntDim-G" << 50 << "weight";
    QTest::newRow("E magnitude math 50/25") << "math" << 50 << "IntDim-E" << 25 << "magnitude";
    QTest::newRow("L activation generalist 0/90") << QString() << 0 << "IntDim-L" << 90 << "activation";
    QTest::newRow("G mask math 75/90") << "math" << 75 << "IntDim-G" << 90 << "mask";
    QTest::newRow("E mask code 50/0") << "code" << 50 << "IntDim-E" << 0 << "mask";
}

void TstBudgetDims::dimPlanEqualsCompileDimPlan()
{
    QFETCH(QString, domain);
    QFETCH(int, expertPercent);
    QFETCH(QString, scope);
    QFETCH(int, unitPercent);
    QFETCH(QString, form);
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    QSignalSpy changed(&panel, &BudgetPanel::planChanged);
    QVERIFY(configure(panel, domain, expertPercent, scope, unitPercent, form));
    const Plan expected = reference(domain, expertPercent, scope, unitPercent, form);
    const Plan& got = *panel.plan();
    QVERIFY(got.hasDims());
    QCOMPARE(got.keep, expected.keep);
    QCOMPARE(got.units, expected.units);
    QCOMPARE(got.dims.scope, scope.toStdString());
    QCOMPARE(got.dims.criterion, expected.dims.criterion);
    QCOMPARE(got.dims.domain, expected.dims.domain);
    QCOMPARE(got.dims.sparsity, unitPercent / 100.0);
    QCOMPARE(got.bytesBefore, expected.bytesBefore);
    QCOMPARE(got.bytesAfter, expected.bytesAfter);
    QCOMPARE(got.paramsAfter, expected.paramsAfter);
    QCOMPARE(got.activeParamsAfter, expected.activeParamsAfter);
    QVERIFY(!changed.isEmpty());
    QCOMPARE(changed.last().at(0).value<Plan>().units, expected.units);
    // Widths count in the prediction: fewer bytes than the expert plan alone whenever units go.
    panel.setDimsEnabled(false);
    QVERIFY(panel.plan() && !panel.plan()->hasDims());
    if (unitPercent > 0)
        QVERIFY(expected.bytesAfter < panel.plan()->bytesAfter);
    else
        QCOMPARE(expected.bytesAfter, panel.plan()->bytesAfter);
}

void TstBudgetDims::savedPlanHasDims()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    QVERIFY(configure(panel, QStringLiteral("math"), 50, QStringLiteral("IntDim-L"), 60, QStringLiteral("mask")));
    const QString path = m_dir.filePath(QStringLiteral("dims.plan.json"));
    QString error;
    QVERIFY2(panel.savePlan(path, &error), qPrintable(error));
    const nlohmann::json saved = readJson(path);
    const Plan expected = reference(QStringLiteral("math"), 50, QStringLiteral("IntDim-L"), 60, QStringLiteral("mask"));
    QCOMPARE(saved.dump(), planToJson(expected).dump());
    QVERIFY(saved.contains("dims"));
    const Plan back = planFromJson(saved, path.toStdString());
    QCOMPARE(back.units, expected.units);
    checkDims(back, "saved plan");
}

void TstBudgetDims::savedPlanEqualsCli_data()
{
    QTest::addColumn<QString>("domain");
    QTest::addColumn<int>("expertPercent");
    QTest::addColumn<QString>("scope");
    QTest::addColumn<int>("unitPercent");
    QTest::addColumn<QString>("form");
    QTest::newRow("math L mask") << "math" << 50 << "IntDim-L" << 60 << "mask";
    QTest::newRow("generalist G grad_abs") << QString() << 25 << "IntDim-G" << 30 << "grad_abs";
    QTest::newRow("code E magnitude") << "code" << 75 << "IntDim-E" << 40 << "magnitude";
}

void TstBudgetDims::savedPlanEqualsCli()
{
    // `moeatlas plan --atlas A --criterion peu (--domain D | --generalist) --keep-fraction K --dims S
    //  --dim-sparsity R --dim-criterion C` writes the same document as Save plan… for those choices.
    QFETCH(QString, domain);
    QFETCH(int, expertPercent);
    QFETCH(QString, scope);
    QFETCH(int, unitPercent);
    QFETCH(QString, form);
    const QString cliPlan = m_dir.filePath(QStringLiteral("cli.plan.json"));
    const QString criterion = form == QLatin1String("magnitude") ? form : QStringLiteral("fisher_") + form;
    QStringList args { QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("--criterion"),
        QStringLiteral("peu"), QStringLiteral("--keep-fraction"), QString::number(1.0 - expertPercent / 100.0),
        QStringLiteral("--dims"), scope, QStringLiteral("--dim-sparsity"), QString::number(unitPercent / 100.0),
        QStringLiteral("--dim-criterion"), criterion, QStringLiteral("-o"), cliPlan };
    args << (domain.isEmpty() ? QStringList { QStringLiteral("--generalist") }
                              : QStringList { QStringLiteral("--domain"), domain });
    const test::ProcessResult r = test::runCli(args);
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));

    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    QVERIFY(configure(panel, domain, expertPercent, scope, unitPercent, form));
    const QString guiPlan = m_dir.filePath(QStringLiteral("gui.plan.json"));
    QString error;
    QVERIFY2(panel.savePlan(guiPlan, &error), qPrintable(error));
    QCOMPARE(readJson(guiPlan).dump(2), readJson(cliPlan).dump(2));
}

void TstBudgetDims::savedFisherExpertPlanEqualsCli_data()
{
    QTest::addColumn<QString>("criterion");
    QTest::addColumn<QString>("domain");
    QTest::addColumn<int>("percent"); // routed experts dropped
    QTest::newRow("fisher_mask math 50%") << "fisher_mask"
                                          << "math" << 50;
    QTest::newRow("fisher_mask generalist 25%") << "fisher_mask" << QString() << 25;
    QTest::newRow("fisher_grad_abs code 75%") << "fisher_grad_abs"
                                              << "code" << 75;
    QTest::newRow("fisher_weight generalist 50%") << "fisher_weight" << QString() << 50;
}

void TstBudgetDims::savedFisherExpertPlanEqualsCli()
{
    // Save plan… with an expert-level Fisher criterion writes the bytes of `moeatlas plan --atlas A
    // --criterion fisher_<form> (--domain D | --generalist) --keep-fraction K`.
    QFETCH(QString, criterion);
    QFETCH(QString, domain);
    QFETCH(int, percent);
    const QString cliPlan = m_dir.filePath(QStringLiteral("cli.fisher.plan.json"));
    QStringList args { QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("--criterion"),
        criterion, QStringLiteral("--keep-fraction"), QString::number(1.0 - percent / 100.0), QStringLiteral("-o"),
        cliPlan };
    args << (domain.isEmpty() ? QStringList { QStringLiteral("--generalist") }
                              : QStringList { QStringLiteral("--domain"), domain });
    const test::ProcessResult r = test::runCli(args);
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));

    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(criterion);
    QCOMPARE(panel.criterion(), criterion);
    panel.setTargetDomain(domain);
    panel.setSparsityPercent(percent);
    QVERIFY(panel.plan() && !panel.plan()->hasDims());
    const QString guiPlan = m_dir.filePath(QStringLiteral("gui.fisher.plan.json"));
    QString error;
    QVERIFY2(panel.savePlan(guiPlan, &error), qPrintable(error));
    QFile gui(guiPlan), cli(cliPlan);
    QVERIFY(gui.open(QIODevice::ReadOnly) && cli.open(QIODevice::ReadOnly));
    const QByteArray bytes = gui.readAll();
    QVERIFY(bytes.contains(":/fisher/"));
    QCOMPARE(bytes, cli.readAll());
}

void TstBudgetDims::customWeightsRefusedWithDims()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    QVERIFY(configure(panel, QString(), 50, QStringLiteral("IntDim-E"), 50, QStringLiteral("mask")));
    QSignalSpy failed(&panel, &BudgetPanel::planFailed);
    panel.setCustomWeights(true);
    QVERIFY(!panel.isCompiling());
    QVERIFY(!panel.plan());
    QCOMPARE(failed.count(), 1);
    QVERIFY(panel.statusText().contains(QStringLiteral("--weight with --dims")));
    panel.setDimsEnabled(false); // weights alone are fine
    QVERIFY(panel.plan() && !panel.plan()->hasDims());
    QVERIFY(panel.plan()->domainWeights.size() == 2);
}

void TstBudgetDims::latestSliderPositionWins()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    QVERIFY(configure(panel, QString(), 50, QStringLiteral("IntDim-G"), 10, QStringLiteral("mask")));
    QSignalSpy changed(&panel, &BudgetPanel::planChanged);
    QSignalSpy failed(&panel, &BudgetPanel::planFailed);
    for (int p = 15; p <= 85; p += 5) // a drag: no event loop between the steps
        panel.dimSlider()->setValue(p);
    QVERIFY(panel.isCompiling());
    QVERIFY(!panel.plan()); // nothing to save or evaluate until the units are chosen
    QTRY_VERIFY_WITH_TIMEOUT(!panel.isCompiling(), 20000);
    QVERIFY(failed.isEmpty());
    QCOMPARE(changed.count(), 1); // superseded compiles report nothing
    const Plan expected = reference(QString(), 50, QStringLiteral("IntDim-G"), 85, QStringLiteral("mask"));
    QCOMPARE(panel.plan()->units, expected.units);
    QCOMPARE(changed.last().at(0).value<Plan>().dims.sparsity, 0.85);
}

void TstBudgetDims::targetsGiveWayToDims()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setBudgetKind(BudgetPanel::BudgetKind::TargetBytes);
    QCOMPARE(panel.budgetKind(), BudgetPanel::BudgetKind::TargetBytes);
    panel.setDimsEnabled(true);
    QCOMPARE(panel.budgetKind(), BudgetPanel::BudgetKind::DropPercent);
    panel.setBudgetKind(BudgetPanel::BudgetKind::TargetParams); // a disabled item: refused
    QCOMPARE(panel.budgetKind(), BudgetPanel::BudgetKind::DropPercent);
    QTRY_VERIFY_WITH_TIMEOUT(!panel.isCompiling(), 20000);
    QVERIFY(panel.plan() && panel.plan()->hasDims());
    QVERIFY(panel.statusText().startsWith(QStringLiteral("Keeps")));
    panel.setDimsEnabled(false);
    panel.setBudgetKind(BudgetPanel::BudgetKind::TargetParams);
    QCOMPARE(panel.budgetKind(), BudgetPanel::BudgetKind::TargetParams);
}

void TstBudgetDims::noFisherNoDims()
{
    BudgetPanel panel;
    panel.setSnapshot(loadAtlasSnapshot(m_plain));
    panel.setDimsEnabled(true);
    QVERIFY(!panel.dimsEnabled());
    QVERIFY(!panel.isCompiling());
    QVERIFY(panel.plan() && !panel.plan()->hasDims());
    // Reopening an atlas with Fisher keeps the form chosen before.
    panel.setSnapshot(m_snapshot);
    panel.setDimForm(QStringLiteral("grad-abs"));
    QCOMPARE(panel.dimForm(), QStringLiteral("grad_abs"));
    panel.setSnapshot(loadAtlasSnapshot(m_atlas));
    QCOMPARE(panel.dimForm(), QStringLiteral("grad_abs"));
}

QTEST_MAIN(TstBudgetDims)
#include "tst_budget_dims.moc"
