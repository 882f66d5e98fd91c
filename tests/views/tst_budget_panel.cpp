// BudgetPanel: the plans it compiles from its controls equal the planner run directly (and the
// CLI's plan file), the heatmap overlay follows the slider, and the quality proxy equals a hand
// computation from the atlas arrays.
#include "atlas_document.h"
#include "budget_panel.h"
#include "checkpoint/checkpoint.h"
#include "heatmap_model.h"
#include "plan/atlas_scores.h"
#include "plan/plan_costs.h"
#include "test_io.h"
#include "test_support.h"
#include "views_fixture.h"

#include <nlohmann/json.hpp>

#include <QPushButton>
#include <QSignalSpy>
#include <QSlider>
#include <QTemporaryDir>
#include <QTest>

#include <fstream>

using namespace moeatlas;
using namespace moeatlas::views;

Q_DECLARE_METATYPE(moeatlas::Plan)

namespace {

Budget fraction(int droppedPercent, BudgetScope scope = BudgetScope::Uniform)
{
    Budget b;
    b.scope = scope;
    b.unit = BudgetUnit::Fraction;
    b.amount = 1.0 - droppedPercent / 100.0;
    return b;
}

nlohmann::json readJson(const QString& path)
{
    std::ifstream in(path.toStdString());
    return nlohmann::json::parse(in, nullptr, false);
}

} // namespace

class TstBudgetPanel : public QObject {
    Q_OBJECT
private Q_SLOTS:
    void initTestCase();
    void specialistSliderMatchesPlanner_data();
    void specialistSliderMatchesPlanner();
    void generalists();
    void byteTarget();
    void overlayFollowsSlider();
    void proxyIsRetainedSoftMass();
    void proxyFallsBackToLoadShare();
    void savedPlanEqualsCli();
    void evaluateRequest();
    void refusedBudgetSaysWhy();
    void reopenKeepsChoices();

private:
    QTemporaryDir m_dir;
    QString m_atlas;
    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    AtlasScores m_peu;
    PlanContext m_ctx;
};

void TstBudgetPanel::initTestCase()
{
    qRegisterMetaType<moeatlas::Plan>();
    QVERIFY(m_dir.isValid());
    QString error;
    m_atlas = test::buildViewsAtlas(m_dir.path(), &error);
    QVERIFY2(!m_atlas.isEmpty(), qPrintable(error));
    m_snapshot = loadAtlasSnapshot(m_atlas);
    // The planner's inputs, read independently of the document.
    m_peu = readAtlasScores(m_atlas.toStdString(), "peu");
    m_ctx = planContextFor(Checkpoint(m_dir.filePath(QStringLiteral("model")).toStdString()));
}

void TstBudgetPanel::specialistSliderMatchesPlanner_data()
{
    QTest::addColumn<QString>("domain");
    QTest::addColumn<int>("percent");
    QTest::addColumn<bool>("global");
    for (const char* d : { "math", "code" })
        for (const int p : { 0, 25, 50, 75 })
            for (const bool g : { false, true })
                QTest::addRow("%s %d%% %s", d, p, g ? "global" : "uniform") << QString::fromLatin1(d) << p << g;
}

void TstBudgetPanel::specialistSliderMatchesPlanner()
{
    QFETCH(QString, domain);
    QFETCH(int, percent);
    QFETCH(bool, global);
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(domain);
    panel.setScope(global ? BudgetScope::Global : BudgetScope::Uniform);
    QSignalSpy changed(&panel, &BudgetPanel::planChanged);
    panel.sparsitySlider()->setValue(percent == 0 ? 1 : 0); // make sure the next value is a change
    panel.sparsitySlider()->setValue(percent);
    QVERIFY(changed.count() >= 1);
    QVERIFY(panel.plan());
    const Plan expected = compileSpecialist(m_peu.domains, domain.toStdString(),
        fraction(percent, global ? BudgetScope::Global : BudgetScope::Uniform), m_ctx);
    const Plan& got = *panel.plan();
    QCOMPARE(got.method, std::string("specialist"));
    QCOMPARE(got.keep, expected.keep);
    QCOMPARE(got.bytesAfter, expected.bytesAfter);
    QCOMPARE(got.paramsAfter, expected.paramsAfter);
    QCOMPARE(got.activeParamsAfter, expected.activeParamsAfter);
    QCOMPARE(changed.last().at(0).value<Plan>().keep, expected.keep);
    if (percent == 50 && !global)
        for (const auto& layer : got.keep)
            QCOMPARE(layer.size(), std::size_t(4));
}

void TstBudgetPanel::generalists()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(QString());
    panel.setSparsityPercent(60);
    QVERIFY(panel.plan());
    const Plan pooled = compilePooledGeneralist(m_peu.domains, m_peu.pooled, fraction(60), m_ctx);
    QCOMPARE(panel.plan()->method, std::string("generalist"));
    QCOMPARE(panel.plan()->keep, pooled.keep);
    QCOMPARE(panel.plan()->domainWeights, pooled.domainWeights);

    panel.setCustomWeights(true);
    panel.setDomainWeight(QStringLiteral("math"), 90);
    panel.setDomainWeight(QStringLiteral("code"), 10);
    const Plan weighted = compileGeneralist(m_peu.domains, { { "math", 90.0 }, { "code", 10.0 } }, fraction(60), m_ctx);
    QCOMPARE(panel.plan()->keep, weighted.keep);
    QCOMPARE(panel.plan()->domainWeights.at("math"), 90.0);
}

void TstBudgetPanel::byteTarget()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(QStringLiteral("code"));
    panel.setBudgetKind(BudgetPanel::BudgetKind::TargetBytes);
    const Plan full = compileSpecialist(m_peu.domains, "code", fraction(0), m_ctx);
    // Room for the fixed part and about 60 % of the experts.
    const double target = static_cast<double>(full.bytesBefore) * 0.8;
    panel.setTargetAmount(target / 1e6);
    QVERIFY(panel.plan());
    Budget b;
    b.unit = BudgetUnit::Bytes;
    b.amount = panel.budget().amount;
    const Plan expected = compileSpecialist(m_peu.domains, "code", b, m_ctx);
    QCOMPARE(panel.plan()->keep, expected.keep);
    QVERIFY(static_cast<double>(panel.plan()->bytesAfter) <= panel.budget().amount);
    QVERIFY(panel.plan()->bytesAfter < panel.plan()->bytesBefore);
}

void TstBudgetPanel::overlayFollowsSlider()
{
    BudgetPanel panel;
    HeatmapModel model;
    QObject::connect(&panel, &BudgetPanel::planChanged, &model, [&model](const Plan& p) { model.setPlan(p); });
    model.setHeatmap(heatmapData(*m_snapshot, { HeatmapQuantity::Kind::Score, QStringLiteral("peu"), 0 }));
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(QStringLiteral("math"));
    for (const int percent : { 25, 50, 75 }) {
        panel.sparsitySlider()->setValue(percent);
        const Plan expected = compileSpecialist(m_peu.domains, "math", fraction(percent), m_ctx);
        for (int l = 0; l < 3; ++l) {
            QCOMPARE(model.keptInRow(l), expected.keptIn(static_cast<std::size_t>(l)));
            for (const int e : expected.keep[static_cast<std::size_t>(l)])
                QVERIFY(model.isKept(l, e));
        }
    }
}

void TstBudgetPanel::proxyIsRetainedSoftMass()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(QStringLiteral("math"));
    panel.setSparsityPercent(50);
    QVERIFY(panel.plan());
    QCOMPARE(panel.proxy().source, std::string("soft_mass"));
    const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
    const auto group = atlas.readResults("scores/soft_mass");
    QVERIFY(group);
    const AtlasArray* mass = group->find("value");
    QVERIFY(mass);
    const Plan& plan = *panel.plan();
    QCOMPARE(panel.proxy().perDomain.size(), std::size_t(2));
    for (std::size_t d = 0; d < 2; ++d) {
        double sum = 0;
        for (std::size_t l = 0; l < 3; ++l)
            for (const int e : plan.keep[l])
                sum += mass->values[(d * 3 + l) * 8 + static_cast<std::size_t>(e)];
        // Double sums of the stored shares (in [0, 1]) in the panel's order: rounding alone, relative to 1.
        QVERIFY(qAbs(panel.proxy().perDomain[d] - sum / 3.0) < 1e-12);
        QVERIFY(panel.proxy().perDomain[d] > 0 && panel.proxy().perDomain[d] < 1);
    }
    // Keeping everything keeps all the mass (soft_mass rows sum to 1 per layer).
    panel.setSparsityPercent(0);
    QVERIFY(qAbs(panel.proxy().perDomain[0] - 1.0) < 1e-9);
}

void TstBudgetPanel::proxyFallsBackToLoadShare()
{
    auto copy = std::make_shared<AtlasSnapshot>(*m_snapshot);
    copy->scoreGroups.erase("soft_mass");
    copy->scores.erase("soft_mass");
    BudgetPanel panel;
    panel.setSnapshot(copy);
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(QStringLiteral("code"));
    panel.setSparsityPercent(75);
    QCOMPARE(panel.proxy().source, std::string("load_share"));
    const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
    const auto stats = atlas.readResults("statistics");
    QVERIFY(stats);
    const AtlasArray* share = stats->find("load_share");
    QVERIFY(share);
    double sum = 0;
    for (std::size_t l = 0; l < 3; ++l)
        for (const int e : panel.plan()->keep[l])
            sum += share->values[(1 * 3 + l) * 8 + static_cast<std::size_t>(e)];
    QVERIFY(qAbs(panel.proxy().perDomain[1] - sum / 3.0) < 1e-12);
}

void TstBudgetPanel::savedPlanEqualsCli()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("peu"));
    panel.setTargetDomain(QStringLiteral("math"));
    panel.setSparsityPercent(50);
    const QString ours = m_dir.filePath(QStringLiteral("gui.plan.json"));
    QString error;
    QVERIFY2(panel.savePlan(ours, &error), qPrintable(error));
    const QString cli = m_dir.filePath(QStringLiteral("cli.plan.json"));
    const test::ProcessResult r = test::runProcess(test::cliExecutable(),
        { QStringLiteral("plan"), QStringLiteral("--atlas"), m_atlas, QStringLiteral("--criterion"),
            QStringLiteral("peu"), QStringLiteral("--domain"), QStringLiteral("math"),
            QStringLiteral("--keep-fraction"), QStringLiteral("0.5"), QStringLiteral("-o"), cli });
    QVERIFY2(r.exitCode == 0, qPrintable(r.stdErr));
    const nlohmann::json a = readJson(ours);
    QVERIFY(a.is_object());
    // Both write planToJson of the plan compileExpertPlan made: the same bytes.
    QCOMPARE(test::readText(ours.toStdString()), test::readText(cli.toStdString()));
}

void TstBudgetPanel::evaluateRequest()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setTargetDomain(QStringLiteral("code"));
    panel.setSparsityPercent(25);
    QSignalSpy requested(&panel, &BudgetPanel::evaluateRequested);
    const auto buttons = panel.findChildren<QPushButton*>();
    QPushButton* evaluate = nullptr;
    for (QPushButton* b : buttons)
        if (b->text().contains(QStringLiteral("Evaluate")))
            evaluate = b;
    QVERIFY(evaluate);
    QVERIFY(evaluate->isEnabled());
    QTest::mouseClick(evaluate, Qt::LeftButton);
    QCOMPARE(requested.count(), 1);
    QCOMPARE(requested.at(0).at(0).value<Plan>().keep, panel.plan()->keep);
}

void TstBudgetPanel::refusedBudgetSaysWhy()
{
    BudgetPanel panel;
    QVERIFY(!panel.plan());
    QVERIFY(!panel.savePlan(m_dir.filePath(QStringLiteral("none.json"))));
    panel.setSnapshot(m_snapshot);
    // The slider stops where top-k would become unsatisfiable (E = 8, k = 2: 75 %).
    QCOMPARE(panel.sparsitySlider()->maximum(), 75);
    // A byte target below the fixed part cannot be met: no plan, the reason is shown.
    QSignalSpy failed(&panel, &BudgetPanel::planFailed);
    panel.setBudgetKind(BudgetPanel::BudgetKind::TargetBytes);
    panel.setTargetAmount(0.001);
    QVERIFY(!panel.plan());
    QVERIFY(failed.count() >= 1);
    QVERIFY(!panel.statusText().isEmpty());
}

void TstBudgetPanel::reopenKeepsChoices()
{
    BudgetPanel panel;
    panel.setSnapshot(m_snapshot);
    panel.setCriterion(QStringLiteral("frequency"));
    panel.setTargetDomain(QStringLiteral("code"));
    panel.setSparsityPercent(25);
    const Plan before = *panel.plan();
    panel.setSnapshot(loadAtlasSnapshot(m_atlas)); // the same atlas, reloaded
    QCOMPARE(panel.criterion(), QStringLiteral("frequency"));
    QCOMPARE(panel.targetDomain(), QStringLiteral("code"));
    QCOMPARE(panel.sparsityPercent(), 25);
    QVERIFY(panel.plan());
    QCOMPARE(panel.plan()->keep, before.keep);
    QCOMPARE(panel.plan()->method, std::string("specialist"));
}

QTEST_MAIN(TstBudgetPanel)
#include "tst_budget_panel.moc"
