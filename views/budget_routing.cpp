#include "budget_routing.h"

#include "atlas_document.h"
#include "metrics/routing_rule_stats.h"
#include "plan/routing_active.h"

#include <QComboBox>
#include <QFutureWatcher>
#include <QLabel>
#include <QLineEdit>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

namespace moeatlas::views {

namespace {

RuleMeanK meanKOnAtlas(const std::string& path, RoutingRule rule)
{
    try {
        const AtlasFile atlas = AtlasFile::openReadOnly(path);
        calibrateThresholds(atlas, rule);
        const RuleKStats stats = routingRuleStats(atlas, rule);
        RuleMeanK out;
        for (std::size_t i = 0; i < stats.layers.size(); ++i)
            out.meanK.push_back(stats.meanK(stats.pooledRow(), static_cast<int>(i)));
        return out;
    } catch (const std::exception& e) {
        return { {}, QString::fromUtf8(e.what()) };
    }
}

} // namespace

RoutingRuleControl::RoutingRuleControl(QWidget* parent)
    : QWidget(parent)
    , m_field(new QComboBox(this))
    , m_error(new QLabel(this))
    , m_prediction(new QLabel(this))
{
    m_field->setEditable(true);
    m_field->setInsertPolicy(QComboBox::NoInsert);
    m_field->setToolTip(tr("How many experts each token is routed to: model (the checkpoint's top-k), top-k:K, "
                           "probmoe:KMIN:KMAX (positive logits clamped to the band), top-p:P[:KMIN:KMAX] (smallest "
                           "k reaching softmax mass P) or threshold:M[:KMIN:KMAX] (per-layer probability thresholds "
                           "calibrated on this atlas to a mean k of M)"));
    m_error->setWordWrap(true);
    m_error->setStyleSheet(QStringLiteral("color: #c0392b;"));
    m_error->hide();
    m_prediction->setTextInteractionFlags(Qt::TextSelectableByMouse);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_field);
    layout->addWidget(m_error);
    layout->addWidget(m_prediction);
    connect(m_field->lineEdit(), &QLineEdit::editingFinished, this, [this] { apply(m_field->currentText()); });
    connect(m_field, &QComboBox::activated, this, [this](int i) { apply(m_field->itemText(i)); });
    setSnapshot(nullptr);
}

RoutingRuleControl::~RoutingRuleControl() = default;

void RoutingRuleControl::setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot)
{
    const bool sameAtlas = snapshot && m_snapshot && snapshot->path == m_snapshot->path;
    m_snapshot = std::move(snapshot);
    m_cache.clear(); // the atlas may have been rewritten
    ++m_generation;
    m_computing = false;
    const QString previous = m_field->currentText();
    const QSignalBlocker block(m_field);
    m_field->clear();
    m_field->setEnabled(m_snapshot != nullptr);
    m_rule = RoutingRule {};
    m_error->hide();
    if (m_snapshot) {
        const int k = m_snapshot->model.topK, lo = std::max(1, k - 2);
        m_field->addItems({ QStringLiteral("model"), QStringLiteral("top-k:%1").arg(std::max(1, k - 1)),
            QStringLiteral("probmoe:%1:%2").arg(lo).arg(k), QStringLiteral("top-p:0.9"),
            QStringLiteral("threshold:%1").arg(std::max(1.0, k - 0.5)) });
        m_field->setCurrentIndex(0);
        if (sameAtlas && !previous.isEmpty()) {
            m_field->setEditText(previous);
            apply(previous);
            return;
        }
    }
    refresh();
}

void RoutingRuleControl::setPlan(const Plan* plan)
{
    m_plan = plan ? std::optional<Plan>(*plan) : std::nullopt;
    refresh();
}

void RoutingRuleControl::setRuleText(const QString& text)
{
    m_field->setEditText(text);
    apply(text);
}

QString RoutingRuleControl::ruleText() const
{
    return m_field->currentText();
}

QString RoutingRuleControl::errorText() const
{
    return m_error->isHidden() ? QString() : m_error->text();
}

void RoutingRuleControl::apply(const QString& text)
{
    if (!m_snapshot)
        return;
    try {
        const RoutingRule rule
            = parseRoutingRule(text.trimmed().toStdString(), m_snapshot->model.numExperts, m_snapshot->model.topK);
        m_error->clear();
        m_error->hide();
        if (rule == m_rule && !m_computing && m_predicted)
            return;
        m_rule = rule;
    } catch (const std::exception& e) {
        // Invalid: the field says why; the rule and the prediction stay as they were.
        m_error->setText(QString::fromUtf8(e.what()));
        m_error->show();
        return;
    }
    refresh();
}

void RoutingRuleControl::refresh()
{
    m_predicted.reset();
    if (!m_snapshot || !m_plan || !m_snapshot->hasCosts || m_plan->activeParamsBefore <= 0) {
        m_prediction->setText(m_snapshot && m_plan
                ? tr("Routing %1: no parameter costs to predict from").arg(QString::fromStdString(m_rule.name()))
                : QString());
        Q_EMIT predictionChanged();
        return;
    }
    const std::string key = m_rule.name();
    std::vector<double> meanK;
    const auto layers = m_plan->keep.size();
    if (m_rule.fixed()) {
        meanK.assign(layers, m_rule.maxK(m_snapshot->model.topK));
    } else if (const auto it = m_cache.find(key); it != m_cache.end()) {
        meanK = it->second;
    } else if (m_computing && m_pendingKey == key) {
        return; // still predicting this rule; the plan is read when it is done
    } else {
        // Reading every layer's logits can take seconds on a large atlas: on a worker thread.
        m_computing = true;
        m_pendingKey = key;
        const quint64 generation = ++m_generation;
        m_prediction->setText(
            tr("Routing %1: predicting mean k from the atlas's logits…").arg(QString::fromStdString(key)));
        auto* watcher = new QFutureWatcher<RuleMeanK>(this);
        connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, generation, key] {
            const RuleMeanK result = watcher->result();
            watcher->deleteLater();
            finish(generation, key, result);
        });
        watcher->setFuture(QtConcurrent::run(meanKOnAtlas, m_snapshot->path.toStdString(), m_rule));
        Q_EMIT predictionChanged();
        return;
    }
    try {
        m_predicted = moeatlas::predictedActiveParams(*m_plan, m_snapshot->planContext, meanK);
        double sum = 0;
        for (const double k : meanK)
            sum += k;
        m_prediction->setText(tr("Predicted active parameters per token (%1, mean k %2): %3 M")
                                  .arg(QString::fromStdString(key))
                                  .arg(sum / static_cast<double>(std::max<std::size_t>(1, meanK.size())), 0, 'f', 3)
                                  .arg(*m_predicted / 1e6, 0, 'f', 3));
    } catch (const std::exception& e) {
        m_prediction->setText(QString::fromUtf8(e.what()));
    }
    Q_EMIT predictionChanged();
}

void RoutingRuleControl::finish(quint64 generation, const std::string& key, const RuleMeanK& result)
{
    if (generation != m_generation)
        return; // superseded by another rule or atlas
    m_computing = false;
    if (!result.error.isEmpty()) {
        m_prediction->setText(result.error);
        m_predicted.reset();
        Q_EMIT predictionChanged();
        return;
    }
    m_cache[key] = result.meanK;
    refresh();
}

} // namespace moeatlas::views
