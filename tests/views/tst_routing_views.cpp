// The Routing tab (charts/routing_view.h) and the budget panel's routing rule (budget_routing.h) on a
// real scored and evaluated atlas (buildViewsAtlas): chart series against the /probmoe, /scores and
// /evaluation arrays read here with AtlasFile, and the predicted active parameters against a mean k
// computed here from the recorded logits with the rules' definitions written out again.
#include "atlas_document.h"
#include "budget_panel.h"
#include "budget_routing.h"
#include "charts/routing_view.h"
#include "checkpoint/checkpoint.h"
#include "main_window.h"
#include "plan/plan_costs.h"
#include "views_fixture.h"

#include <nlohmann/json.hpp>

#include <QBarSeries>
#include <QBarSet>
#include <QChart>
#include <QChartView>
#include <QComboBox>
#include <QLabel>
#include <QLineSeries>
#include <QScatterSeries>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>

using namespace moeatlas;
using namespace moeatlas::views;

namespace {

std::vector<double> barValues(QChart* chart, const QString& set)
{
    for (QAbstractSeries* s : chart->series())
        if (auto* bars = qobject_cast<QBarSeries*>(s))
            for (QBarSet* b : bars->barSets())
                if (b->label() == set) {
                    std::vector<double> v;
                    v.reserve(static_cast<std::size_t>(b->count()));
                    for (int i = 0; i < b->count(); ++i)
                        v.push_back(b->at(i));
                    return v;
                }
    return {};
}

std::vector<double> sliceOf(const AtlasArray& a, std::size_t row, std::size_t layer)
{
    const std::size_t L = a.dims[1], W = a.dims.size() > 2 ? a.dims[2] : 1;
    const std::size_t base = (row * L + layer) * W;
    return { a.values.begin() + static_cast<std::ptrdiff_t>(base),
        a.values.begin() + static_cast<std::ptrdiff_t>(base + W) };
}

void near(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12)
{
    QCOMPARE(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        QVERIFY2(std::fabs(got[i] - want[i]) <= tol,
            qPrintable(QStringLiteral("[%1] %2 vs %3").arg(i).arg(got[i]).arg(want[i])));
}

} // namespace

class TstRoutingViews : public QObject {
    Q_OBJECT
private:
    QTemporaryDir m_dir;
    QString m_atlas;
    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    std::optional<AtlasResults> m_probmoe, m_softMass;
    std::map<std::string, AtlasResults> m_evaluations;
    PlanContext m_ctx;
    std::vector<std::vector<float>> m_logits; // per MoE layer [T, E]
    int m_experts = 0, m_topK = 0;

    // Mean k per MoE layer of a rule, from the definitions (checkpoint/routing_rule.h).
    std::vector<double> meanK(const std::string& kind, double p, int kMin, int kMax) const
    {
        std::vector<double> out;
        for (const std::vector<float>& layer : m_logits) {
            const std::size_t T = layer.size() / static_cast<std::size_t>(m_experts);
            double sum = 0;
            for (std::size_t t = 0; t < T; ++t) {
                const float* x = layer.data() + t * static_cast<std::size_t>(m_experts);
                int k = 0;
                if (kind == "probmoe") {
                    for (int e = 0; e < m_experts; ++e)
                        k += x[e] > 0.0f ? 1 : 0;
                } else { // top-p: the smallest k whose largest softmax probabilities reach p
                    float mx = x[0];
                    for (int e = 1; e < m_experts; ++e)
                        mx = std::max(mx, x[e]);
                    std::vector<float> q(static_cast<std::size_t>(m_experts));
                    float z = 0;
                    for (int e = 0; e < m_experts; ++e)
                        z += (q[static_cast<std::size_t>(e)] = std::exp(x[e] - mx));
                    for (float& v : q)
                        v /= z;
                    std::sort(q.begin(), q.end(), std::greater<>());
                    double mass = 0;
                    while (k < m_experts && mass < p)
                        mass += q[static_cast<std::size_t>(k++)];
                }
                sum += std::clamp(k, kMin, kMax);
            }
            out.push_back(sum / static_cast<double>(T));
        }
        return out;
    }

    double expectedActive(const Plan& plan, const std::vector<double>& k) const
    {
        // Routed active params per token: top-k experts' weights per layer (router rows are not routed).
        double active = static_cast<double>(plan.activeParamsAfter);
        for (std::size_t i = 0; i < k.size(); ++i)
            active += (k[i] - m_topK) * static_cast<double>(m_ctx.costs.expertParams[i] - m_ctx.costs.routerRowParams);
        return active;
    }

private Q_SLOTS:
    void initTestCase()
    {
        QVERIFY(m_dir.isValid());
        QString error;
        m_atlas = test::buildViewsAtlas(m_dir.path(), &error);
        QVERIFY2(!m_atlas.isEmpty(), qPrintable(error));
        m_snapshot = loadAtlasSnapshot(m_atlas);
        const AtlasFile atlas = AtlasFile::openReadOnly(m_atlas.toStdString());
        m_probmoe = atlas.readResults("probmoe");
        m_softMass = atlas.readResults("scores/soft_mass");
        QVERIFY(m_probmoe && m_softMass);
        for (const std::string& label : atlas.resultGroups("evaluation"))
            m_evaluations.emplace(label, *atlas.readResults("evaluation/" + label));
        QVERIFY(!m_evaluations.empty());
        m_experts = atlas.model().numExperts;
        m_topK = atlas.model().topK;
        for (const int l : atlas.model().moeLayers)
            m_logits.push_back(atlas.readLogits(l));
        m_ctx = planContextFor(Checkpoint(m_dir.filePath(QStringLiteral("model")).toStdString()));
    }

    void routingTabSeries()
    {
        RoutingView view;
        view.setSnapshot(m_snapshot);
        QVERIFY(view.hasTables());
        QVERIFY(view.noteText().isEmpty() || !view.noteText().contains(QStringLiteral("Score atlas")));
        const std::size_t pooled = m_snapshot->domains.size();
        const auto& kstar = *m_probmoe->find("kstar_mean");
        const auto& card = *m_probmoe->find("cardinality");
        const auto& marg = *m_probmoe->find("marginal_mean");
        const auto& soft = *m_softMass->find("value");
        for (const auto& [row, layer] :
            std::vector<std::pair<std::size_t, std::size_t>> { { pooled, 0 }, { 0, 2 }, { 1, 1 } }) {
            view.setDomainRow(static_cast<int>(row));
            view.setLayerIndex(static_cast<int>(layer));
            QCOMPARE(view.domainRow(), static_cast<int>(row));
            // k*: one point per MoE layer at its decoder layer.
            auto* line = qobject_cast<QLineSeries*>(view.kstarChart()->series().value(0));
            QVERIFY(line);
            QCOMPARE(line->count(), static_cast<int>(m_snapshot->model.moeLayers.size()));
            for (int i = 0; i < line->count(); ++i) {
                QCOMPARE(
                    line->at(i).x(), static_cast<double>(m_snapshot->model.moeLayers[static_cast<std::size_t>(i)]));
                QCOMPARE(line->at(i).y(), kstar.values[row * kstar.dims[1] + static_cast<std::size_t>(i)]);
            }
            near(barValues(view.cardinalityChart(), QStringLiteral("P(|S| = c)")), sliceOf(card, row, layer));
            std::vector<double> m = sliceOf(marg, row, layer);
            for (double& v : m)
                v /= m_topK;
            near(barValues(view.marginalChart(), QStringLiteral("exact-k marginal / k")), m);
            near(
                barValues(view.marginalChart(), QStringLiteral("mean softmax probability")), sliceOf(soft, row, layer));
        }
        QVERIFY(view.marginalView()->toolTip().contains(QStringLiteral("invariant to a shift of all logits")));
    }

    void routingTabTradeoff()
    {
        RoutingView view;
        view.setSnapshot(m_snapshot);
        // Every evaluated variant is a point; the loss is the token-weighted mean of its nll row.
        std::size_t expected = 0;
        for (const auto& [name0, group] : m_evaluations) {
            const std::string& label = name0; // a plain reference: lambdas cannot capture bindings (C++17)
            const AtlasArray& nll = *group.find("nll");
            const AtlasArray& tokens = *group.find("tokens");
            const auto params = nlohmann::json::parse(group.paramsJson);
            const std::size_t V = nll.dims[0], D = nll.dims[1];
            // Only tables that route some variant with a rule are points (/evaluation/routing here).
            bool routed = false;
            for (const auto& variant : params["variants"])
                routed = routed || variant.value("routing", std::string("model")) != "model";
            if (!routed)
                continue;
            const AtlasArray& meanExperts = *group.find("mean_experts");
            double all = 0;
            for (const double n : tokens.values)
                all += n;
            for (std::size_t v = 0; v < V; ++v) {
                double loss = 0, experts = 0;
                for (std::size_t d = 0; d < D; ++d) {
                    loss += nll.values[v * D + d] * tokens.values[d] / all;
                    experts += meanExperts.values[v * D + d] * tokens.values[d] / all;
                }
                const std::string name = params["variants"][v]["name"].get<std::string>();
                const auto it = std::find_if(view.tradeoffPoints().begin(), view.tradeoffPoints().end(),
                    [&](const RoutingTradeoffPoint& p) { return p.table == label && p.variant == name; });
                QVERIFY2(it != view.tradeoffPoints().end(), name.c_str());
                QVERIFY(std::fabs(it->loss - loss) < 1e-12);
                QVERIFY(std::fabs(it->meanExperts - experts) < 1e-12);
                QCOMPARE(QString::fromStdString(it->rule),
                    QString::fromStdString(params["variants"][v].value("routing", std::string("model"))));
                ++expected;
            }
        }
        QCOMPARE(view.tradeoffPoints().size(), expected);
        // The fixture's /evaluation/routing: the full model, its top-p variant and the top-k ladder.
        QVERIFY(expected >= 3);
        QCOMPARE(view.tradeoffChart()->series().size(), 2); // "fixed top-k" and the top-p rule
        int points = 0;
        for (QAbstractSeries* s : view.tradeoffChart()->series())
            points += qobject_cast<QScatterSeries*>(s)->count();
        QCOMPARE(static_cast<std::size_t>(points), expected);
    }

    void mainWindowTab()
    {
        MainWindow w;
        w.setErrorDialogsEnabled(false);
        QVERIFY(w.openAtlasBlocking(m_atlas));
        QVERIFY(w.tabs()->indexOf(w.routingView()) >= 0);
        QVERIFY(w.routingView()->hasTables());
        // The points of the one table with routing rules (the sweep in /evaluation/default has none).
        QCOMPARE(w.routingView()->tradeoffPoints().size(), m_evaluations.at("routing").find("nll")->dims[0]);
    }

    void routingTabWithoutProbmoe()
    {
        auto copy = std::make_shared<AtlasSnapshot>(*m_snapshot);
        copy->probmoe.reset();
        copy->probmoeNote = QStringLiteral("run.atlas.h5: no ProbMoE exact-k tables (/probmoe)");
        RoutingView view;
        view.setSnapshot(copy);
        QVERIFY(!view.hasTables());
        QVERIFY2(view.noteText().contains(QStringLiteral("Jobs > Score atlas")), qPrintable(view.noteText()));
        QVERIFY(view.cardinalityChart()->series().isEmpty());
        QVERIFY(view.marginalChart()->series().isEmpty());
    }

    void budgetPredictsActiveParams_data() // NOLINT(readability-identifier-naming): QtTest's name for the rows
    {
        QTest::addColumn<QString>("rule");
        QTest::addColumn<QString>("kind");
        QTest::addColumn<double>("p");
        QTest::addColumn<int>("kMin");
        QTest::addColumn<int>("kMax");
        QTest::newRow("probmoe") << "probmoe:1:2"
                                 << "probmoe" << 0.0 << 1 << 2;
        QTest::newRow("top-p") << "top-p:0.25"
                               << "top-p" << 0.25 << 1 << 2;
        QTest::newRow("top-p wide band") << "top-p:0.8:1:4"
                                         << "top-p" << 0.8 << 1 << 4;
    }

    void budgetPredictsActiveParams()
    {
        QFETCH(QString, rule);
        QFETCH(QString, kind);
        QFETCH(double, p);
        QFETCH(int, kMin);
        QFETCH(int, kMax);
        BudgetPanel panel;
        panel.setSnapshot(m_snapshot);
        QVERIFY(panel.plan());
        RoutingRuleControl* control = panel.routingRuleControl();
        control->setRuleText(rule);
        QVERIFY(control->errorText().isEmpty());
        QTRY_VERIFY_WITH_TIMEOUT(!control->isComputing() && control->predictedActiveParams(), 60000);
        const std::vector<double> k = meanK(kind.toStdString(), p, kMin, kMax);
        // A row where the rule gives every token the model's k would test nothing.
        QVERIFY(std::any_of(k.begin(), k.end(), [&](double v) { return std::fabs(v - m_topK) > 0.01; }));
        const double want = expectedActive(*panel.plan(), k);
        QVERIFY2(std::fabs(*control->predictedActiveParams() - want) <= 1e-9 * want,
            qPrintable(
                QStringLiteral("%1 vs %2").arg(*control->predictedActiveParams(), 0, 'f', 3).arg(want, 0, 'f', 3)));
        QVERIFY2(control->predictionLabel()->text().contains(QStringLiteral("%1 M").arg(want / 1e6, 0, 'f', 3)),
            qPrintable(control->predictionLabel()->text()));
        // The plan changes: the cached mean k gives the new plan's prediction at once.
        panel.sparsitySlider()->setValue(25);
        QVERIFY(!control->isComputing());
        QVERIFY(control->predictedActiveParams());
        const double again = expectedActive(*panel.plan(), meanK(kind.toStdString(), p, kMin, kMax));
        QVERIFY(std::fabs(*control->predictedActiveParams() - again) <= 1e-9 * again);
    }

    void budgetThresholdHitsTarget()
    {
        BudgetPanel panel;
        panel.setSnapshot(m_snapshot);
        RoutingRuleControl* control = panel.routingRuleControl();
        control->setRuleText(QStringLiteral("threshold:1.5"));
        QTRY_VERIFY_WITH_TIMEOUT(!control->isComputing() && control->predictedActiveParams(), 60000);
        // Calibrated per layer to a mean k of 1.5 within one token's step (1/T).
        const double T = static_cast<double>(m_logits.front().size()) / m_experts;
        const double want = expectedActive(*panel.plan(), std::vector<double>(m_logits.size(), 1.5));
        double slack = 0;
        for (std::size_t i = 0; i < m_logits.size(); ++i)
            slack += static_cast<double>(m_ctx.costs.expertParams[i] - m_ctx.costs.routerRowParams) / T;
        QVERIFY(std::fabs(*control->predictedActiveParams() - want) <= slack + 1e-6);
        // Model and top-k need no logits: top-k:1 halves every layer's routed share at once.
        control->setRuleText(QStringLiteral("top-k:1"));
        QVERIFY(!control->isComputing());
        const double one = expectedActive(*panel.plan(), std::vector<double>(m_logits.size(), 1.0));
        QVERIFY(std::fabs(*control->predictedActiveParams() - one) <= 1e-9 * one);
        QVERIFY(one < static_cast<double>(panel.plan()->activeParamsAfter));
    }

    void budgetInvalidRule()
    {
        BudgetPanel panel;
        panel.setSnapshot(m_snapshot);
        RoutingRuleControl* control = panel.routingRuleControl();
        control->setRuleText(QStringLiteral("top-k:1"));
        const QString label = control->predictionLabel()->text();
        const auto predicted = control->predictedActiveParams();
        QVERIFY(predicted);
        for (const char* bad : { "top-k:99", "probmoe:3:1", "top-p:1.5", "sometimes" }) {
            control->setRuleText(QString::fromLatin1(bad));
            QVERIFY2(control->errorText().contains(QStringLiteral("routing rule '%1'").arg(QString::fromLatin1(bad))),
                qPrintable(control->errorText()));
            QCOMPARE(control->predictionLabel()->text(), label);
            QCOMPARE(control->predictedActiveParams(), predicted);
            QCOMPARE(control->rule().name(), std::string("top-k:1"));
            QVERIFY(!control->isComputing());
        }
        control->setRuleText(QStringLiteral("model"));
        QVERIFY(control->errorText().isEmpty());
        QVERIFY(
            std::fabs(*control->predictedActiveParams() - static_cast<double>(panel.plan()->activeParamsAfter)) < 0.5);
    }
};

QTEST_MAIN(TstRoutingViews)
#include "tst_routing_views.moc"
