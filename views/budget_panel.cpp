#include "budget_panel.h"

#include "atlas_document.h"
#include "budget_routing.h"
#include "dim_planner.h"
#include "fisher/fisher_store.h"
#include "fisher_data.h"
#include "plan/routing_mass.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "workflows/plan_workflow.h"

#include <nlohmann/json.hpp>

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QSlider>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

namespace moeatlas::views {

namespace {

QString gigabytes(uint64_t bytes)
{
    return QStringLiteral("%1 MB").arg(static_cast<double>(bytes) / 1e6, 0, 'f', 3);
}

QString millions(int64_t n)
{
    return QStringLiteral("%1 M").arg(static_cast<double>(n) / 1e6, 0, 'f', 3);
}

QString reduction(double before, double after)
{
    return before > 0 ? QStringLiteral(" (−%1%)").arg(100.0 * (before - after) / before, 0, 'f', 1) : QString();
}

} // namespace

RoutingMassProxy retainedRoutingMass(const AtlasSnapshot& snapshot, const Plan& plan)
{
    if (plan.keep.size() != static_cast<std::size_t>(snapshot.numLayers())
        || plan.numExperts != static_cast<int>(snapshot.numExperts()))
        return {};
    return moeatlas::retainedRoutingMass(
        snapshot.scoreArray("soft_mass"), snapshot.statisticsArray("load_share"), snapshot.domains.size(), plan);
}

BudgetPanel::BudgetPanel(QWidget* parent)
    : QWidget(parent)
{
    auto* outer = new QVBoxLayout(this);

    auto* planBox = new QGroupBox(tr("Plan"), this);
    auto* form = new QFormLayout(planBox);
    m_criterion = new QComboBox(planBox);
    m_criterion->setToolTip(tr("Expert scores to rank by (moeatlas score)"));
    form->addRow(tr("&Criterion:"), m_criterion);
    m_target = new QComboBox(planBox);
    m_target->setToolTip(tr("Specialist: keep what one domain needs; generalist: a weighted mean of the domains"));
    form->addRow(tr("&Target:"), m_target);
    m_scope = new QComboBox(planBox);
    m_scope->addItem(tr("Uniform (same count per layer)"));
    m_scope->addItem(tr("Global (ranked across layers)"));
    form->addRow(tr("&Scope:"), m_scope);
    m_kind = new QComboBox(planBox);
    m_kind->addItem(tr("Drop % of routed experts"));
    m_kind->addItem(tr("Target checkpoint size (MB)"));
    m_kind->addItem(tr("Target parameters (millions)"));
    form->addRow(tr("&Budget:"), m_kind);
    m_slider = new QSlider(Qt::Horizontal, planBox);
    m_slider->setRange(0, 99);
    m_slider->setValue(50);
    m_slider->setToolTip(tr("Percent of routed experts dropped"));
    m_sliderLabel = new QLabel(planBox);
    auto* sliderRow = new QHBoxLayout;
    sliderRow->addWidget(m_slider, 1);
    sliderRow->addWidget(m_sliderLabel);
    form->addRow(tr("Sparsity:"), sliderRow);
    m_amount = new QDoubleSpinBox(planBox);
    m_amount->setDecimals(3);
    m_amount->setRange(0, 1e12);
    m_amount->setKeyboardTracking(false);
    form->addRow(tr("T&arget:"), m_amount);
    m_routingRule = new RoutingRuleControl(planBox);
    form->addRow(tr("&Routing:"), m_routingRule);
    outer->addWidget(planBox);

    // Dimension pruning (Fisher-MoE): a checkable group, so its controls are off with it.
    m_dims = new QGroupBox(tr("Prune expert units (Fisher-MoE)"), this);
    m_dims->setCheckable(true);
    m_dims->setChecked(false);
    m_dims->setToolTip(tr("Drop the least important intermediate units of the kept experts (moeatlas fisher)"));
    // The controls fold away while the group is unchecked; the note (Fisher run, or why there is
    // none) stays.
    auto* dimsLayout = new QVBoxLayout(m_dims);
    auto* dimsBody = new QWidget(m_dims);
    auto* dimsForm = new QFormLayout(dimsBody);
    dimsForm->setContentsMargins(0, 0, 0, 0);
    m_dimScope = new QComboBox(dimsBody);
    m_dimScope->addItem(tr("IntDim-E: same width"), static_cast<int>(DimScope::Expert));
    m_dimScope->setItemData(0,
        tr("Every kept expert keeps its own best units: one uniform width (loads in stock "
           "transformers)"),
        Qt::ToolTipRole);
    m_dimScope->addItem(tr("IntDim-L: per layer"), static_cast<int>(DimScope::Layer));
    m_dimScope->setItemData(
        1, tr("The units of a layer's kept experts ranked together: widths differ per expert"), Qt::ToolTipRole);
    m_dimScope->addItem(tr("IntDim-G: all layers"), static_cast<int>(DimScope::Global));
    m_dimScope->setItemData(
        2, tr("The units of all kept experts ranked together: widths differ per expert and layer"), Qt::ToolTipRole);
    dimsForm->addRow(tr("Sc&ope:"), m_dimScope);
    m_dimForm = new QComboBox(dimsBody);
    m_dimForm->setToolTip(tr("Unit scores to rank by: of the specialist's domain, pooled for a generalist"));
    dimsForm->addRow(tr("Unit &scores:"), m_dimForm);
    m_dimSlider = new QSlider(Qt::Horizontal, dimsBody);
    m_dimSlider->setRange(0, 95);
    m_dimSlider->setValue(50);
    m_dimSlider->setToolTip(tr("Percent of the kept experts' intermediate units dropped"));
    m_dimSliderLabel = new QLabel(dimsBody);
    auto* dimRow = new QHBoxLayout;
    dimRow->addWidget(m_dimSlider, 1);
    dimRow->addWidget(m_dimSliderLabel);
    dimsForm->addRow(tr("Unit sparsity:"), dimRow);
    dimsLayout->addWidget(dimsBody);
    m_dimNote = new QLabel(m_dims);
    m_dimNote->setWordWrap(true);
    dimsLayout->addWidget(m_dimNote);
    dimsBody->setVisible(false);
    connect(m_dims, &QGroupBox::toggled, dimsBody, &QWidget::setVisible);
    outer->addWidget(m_dims);
    m_planner = new DimPlanner(this);

    auto* weightsGroup = new QGroupBox(tr("Generalist weights"), this);
    auto* weightsLayout = new QVBoxLayout(weightsGroup);
    m_customWeights = new QCheckBox(tr("Custom domain &weights (default: token counts)"), weightsGroup);
    weightsLayout->addWidget(m_customWeights);
    m_weightsBox = new QVBoxLayout;
    weightsLayout->addLayout(m_weightsBox);
    outer->addWidget(weightsGroup);

    auto* resultGroup = new QGroupBox(tr("Prediction"), this);
    auto* resultLayout = new QVBoxLayout(resultGroup);
    m_kept = new QLabel(resultGroup);
    m_units = new QLabel(resultGroup);
    m_savings = new QLabel(resultGroup);
    m_proxyLabel = new QLabel(resultGroup);
    m_proxyLabel->setToolTip(tr("Per domain: the mean over MoE layers of the summed soft_mass score (mean softmax "
                                "probability) of the kept experts; load_share when the atlas has no soft_mass. "
                                "100% = nothing dropped. A quick proxy; Evaluate… measures the loss."));
    // Short explicit lines, no word wrap: wrapped labels in a scrolled dock lose their height.
    for (QLabel* l : { m_kept, m_units, m_savings, m_proxyLabel }) {
        l->setTextInteractionFlags(Qt::TextSelectableByMouse);
        resultLayout->addWidget(l);
    }
    m_kept->setWordWrap(true); // error messages can be long
    outer->addWidget(resultGroup);

    auto* buttons = new QHBoxLayout;
    m_evaluate = new QPushButton(tr("&Evaluate…"), this);
    m_evaluate->setToolTip(tr("Measure the per-domain loss of this plan (background job)"));
    m_save = new QPushButton(tr("Save &plan…"), this);
    buttons->addWidget(m_evaluate);
    buttons->addWidget(m_save);
    outer->addLayout(buttons);
    outer->addStretch(1);

    const auto changed = [this] {
        if (!m_updating)
            recompile();
    };
    connect(m_criterion, &QComboBox::currentIndexChanged, this, changed);
    connect(m_target, &QComboBox::currentIndexChanged, this, [this] {
        const bool generalist = m_target->currentIndex() <= 0;
        m_customWeights->setEnabled(generalist);
        for (auto& [name, slider] : m_weights)
            slider->setEnabled(generalist && m_customWeights->isChecked());
        if (!m_updating)
            recompile();
    });
    connect(m_customWeights, &QCheckBox::toggled, this, [this](bool on) {
        for (auto& [name, slider] : m_weights)
            slider->setEnabled(on);
        if (!m_updating)
            recompile();
    });
    connect(m_scope, &QComboBox::currentIndexChanged, this, changed);
    connect(m_kind, &QComboBox::currentIndexChanged, this, [this] {
        updateBudgetControls();
        if (!m_updating)
            recompile();
    });
    connect(m_slider, &QSlider::valueChanged, this, changed);
    connect(m_dims, &QGroupBox::toggled, this, [this] {
        updateBudgetControls();
        if (!m_updating)
            recompile();
    });
    connect(m_dimScope, &QComboBox::currentIndexChanged, this, changed);
    connect(m_dimForm, &QComboBox::currentIndexChanged, this, changed);
    connect(m_dimSlider, &QSlider::valueChanged, this, changed);
    connect(m_planner, &DimPlanner::compiled, this,
        [this](quint64 generation, const Plan& plan) { finishDims(generation, &plan, QString()); });
    connect(m_planner, &DimPlanner::failed, this,
        [this](quint64 generation, const QString& error) { finishDims(generation, nullptr, error); });
    connect(m_amount, &QDoubleSpinBox::valueChanged, this, changed);
    connect(m_evaluate, &QPushButton::clicked, this, [this] {
        if (m_plan)
            Q_EMIT evaluateRequested(*m_plan);
    });
    connect(m_save, &QPushButton::clicked, this, &BudgetPanel::saveWithDialog);
    setSnapshot(nullptr);
}

BudgetPanel::~BudgetPanel() = default;

void BudgetPanel::setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot)
{
    m_snapshot = std::move(snapshot);
    m_routingRule->setSnapshot(m_snapshot);
    m_updating = true;
    // Reopening (e.g. after an evaluation wrote to the atlas) keeps the choices that still apply.
    const QString previousCriterion = m_criterion->currentText();
    const QString previousTarget = targetDomain();
    const QString previousForm = dimForm();
    std::map<QString, int> previousWeights;
    for (const auto& [name, slider] : m_weights)
        previousWeights[name] = slider->value();
    m_criterion->clear();
    m_target->clear();
    m_dimForm->clear();
    if (m_snapshot) {
        QStringList criteria;
        for (const auto& [name, scores] : m_snapshot->scores)
            criteria << QString::fromStdString(name);
        m_criterion->addItems(criteria);
        // PEU (the PreMoE criterion) first when there is no earlier choice.
        const QString preferred = criteria.contains(previousCriterion) ? previousCriterion : QStringLiteral("peu");
        if (criteria.contains(preferred))
            m_criterion->setCurrentText(preferred);
        m_target->addItem(tr("Generalist (all domains)"));
        for (const QString& d : m_snapshot->domainNames())
            m_target->addItem(tr("Specialist: %1").arg(d), d);
        m_target->setCurrentIndex(std::max(0, m_target->findData(previousTarget)));
        const int E = std::max(1, m_snapshot->numExperts());
        const int topK = std::max(1, m_snapshot->planContext.topK);
        m_slider->setMaximum(std::max(0, static_cast<int>(std::floor(100.0 * (E - topK) / E))));
        if (m_snapshot->fisher) {
            for (const FisherSummaryForm& f : m_snapshot->fisher->forms)
                m_dimForm->addItem(QString::fromStdString(fisherCriterionName(f.form)), QString::fromStdString(f.form));
            const int keep = m_dimForm->findData(previousForm);
            m_dimForm->setCurrentIndex(keep >= 0 ? keep : std::max(0, m_dimForm->findData(QStringLiteral("mask"))));
        }
    }
    const bool fisher = m_snapshot && m_snapshot->fisher;
    if (!fisher)
        m_dims->setChecked(false);
    m_dims->setEnabled(fisher);
    if (fisher) {
        QStringList names;
        for (std::size_t d = 0; d + 1 < m_snapshot->fisher->domains.size(); ++d)
            names << QString::fromStdString(m_snapshot->fisher->domains[d]);
        m_dimNote->setText(tr("Fisher of %1 sequences (%2).")
                               .arg(m_snapshot->fisher->samples.back())
                               .arg(names.join(QStringLiteral(", "))));
    } else
        m_dimNote->setText(m_snapshot ? m_snapshot->fisherNote : QString());
    rebuildWeights();
    for (auto& [name, slider] : m_weights) {
        if (const auto it = previousWeights.find(name); it != previousWeights.end())
            slider->setValue(it->second);
    }
    updateBudgetControls();
    setEnabled(m_snapshot != nullptr);
    m_updating = false;
    recompile();
}

void BudgetPanel::rebuildWeights()
{
    for (auto& [name, slider] : m_weights)
        delete slider->parentWidget();
    m_weights.clear();
    if (!m_snapshot)
        return;
    double total = 0;
    for (const AtlasDomain& d : m_snapshot->domains)
        total += static_cast<double>(d.numTokens);
    for (const AtlasDomain& d : m_snapshot->domains) {
        auto* row = new QWidget(this);
        auto* layout = new QHBoxLayout(row);
        layout->setContentsMargins(0, 0, 0, 0);
        const QString name = QString::fromStdString(d.name);
        auto* label = new QLabel(name, row);
        label->setMinimumWidth(60);
        auto* slider = new QSlider(Qt::Horizontal, row);
        slider->setRange(0, 100);
        slider->setValue(
            total > 0 ? static_cast<int>(std::lround(100.0 * static_cast<double>(d.numTokens) / total)) : 50);
        slider->setEnabled(m_customWeights->isChecked());
        slider->setToolTip(tr("Weight of %1 in the generalist").arg(name));
        layout->addWidget(label);
        layout->addWidget(slider, 1);
        m_weightsBox->addWidget(row);
        connect(slider, &QSlider::valueChanged, this, [this] {
            if (!m_updating && m_customWeights->isChecked())
                recompile();
        });
        m_weights.emplace_back(name, slider);
    }
}

void BudgetPanel::updateBudgetControls()
{
    // Byte and parameter targets size expert plans; with dims on only "Drop %" applies.
    const bool targets = m_snapshot && m_snapshot->hasCosts && !m_dims->isChecked();
    m_kind->setItemData(1, targets ? QVariant() : QVariant(0), Qt::UserRole - 1);
    m_kind->setItemData(2, targets ? QVariant() : QVariant(0), Qt::UserRole - 1);
    if (!targets && m_kind->currentIndex() != 0) {
        const QSignalBlocker block(m_kind);
        m_kind->setCurrentIndex(0);
    }
    m_dimSliderLabel->setText(QStringLiteral("%1%").arg(m_dimSlider->value()));
    const BudgetKind kind = budgetKind();
    m_slider->setEnabled(kind == BudgetKind::DropPercent);
    m_amount->setEnabled(kind != BudgetKind::DropPercent);
    m_amount->setSuffix(kind == BudgetKind::TargetBytes ? QStringLiteral(" MB") : QStringLiteral(" M"));
    m_sliderLabel->setText(QStringLiteral("%1%").arg(m_slider->value()));
}

Budget BudgetPanel::budget() const
{
    Budget b;
    b.scope = scope();
    switch (budgetKind()) {
    case BudgetKind::DropPercent:
        b.unit = BudgetUnit::Fraction;
        b.amount = 1.0 - m_slider->value() / 100.0;
        break;
    case BudgetKind::TargetBytes:
        b.unit = BudgetUnit::Bytes;
        b.amount = m_amount->value() * 1e6;
        break;
    case BudgetKind::TargetParams:
        b.unit = BudgetUnit::Params;
        b.amount = m_amount->value() * 1e6;
        break;
    }
    return b;
}

void BudgetPanel::recompile()
{
    m_sliderLabel->setText(QStringLiteral("%1%").arg(m_slider->value()));
    m_dimSliderLabel->setText(QStringLiteral("%1%").arg(m_dimSlider->value()));
    m_planner->cancel();
    m_compiling = false;
    m_plan.reset();
    m_proxy = {};
    m_error.clear();
    const AtlasScores* found = nullptr;
    if (m_snapshot) {
        const auto it = m_snapshot->scores.find(criterion().toStdString());
        found = it == m_snapshot->scores.end() ? nullptr : &it->second;
    }
    if (!found) {
        m_error = m_snapshot ? tr("This atlas has no scores: Jobs > Score atlas (or moeatlas score) computes them.")
                             : tr("No atlas open.");
        showResult();
        return;
    }
    const AtlasScores& scores = *found;
    try {
        ExpertSelection selection;
        selection.budget = budget();
        const QString domain = targetDomain();
        if (!domain.isEmpty()) {
            selection.family = ExpertSelection::Family::Specialist;
            selection.domain = domain.toStdString();
        } else {
            selection.family = ExpertSelection::Family::Generalist;
            if (m_customWeights->isChecked())
                for (const auto& [name, slider] : m_weights)
                    selection.weights[name.toStdString()] = slider->value();
        }
        Plan plan = compileExpertPlan(scores.domains, &scores.pooled, selection, m_snapshot->planContext);
        // Provenance as `moeatlas plan --atlas` records it.
        setAtlasProvenance(plan, m_snapshot->path.toStdString(), m_snapshot->scoreSource(criterion().toStdString()),
            m_snapshot->model.configSha256);
        if (dimsEnabled() && m_snapshot->fisherUnits && domain.isEmpty() && m_customWeights->isChecked())
            throw InputError(tr("Custom domain weights cannot be combined with unit pruning: unit scores exist per "
                                "domain and pooled only (moeatlas plan refuses --weight with --dims). Choose a "
                                "specialist or the default generalist (pooled).")
                                 .toStdString());
        if (dimsEnabled() && m_snapshot->fisherUnits) {
            // The unit selection follows on the worker thread (finishDims).
            m_compiling = true;
            m_dimGeneration = m_planner->request(DimRequest { std::move(plan), m_snapshot->fisherUnits,
                dimForm().toStdString(), domain.toStdString(), dimBudget(), m_snapshot->planContext });
            showResult();
            return;
        }
        m_plan = std::move(plan);
        m_proxy = retainedRoutingMass(*m_snapshot, *m_plan);
    } catch (const std::exception& e) {
        m_error = QString::fromUtf8(e.what());
    }
    showResult();
    if (m_plan)
        Q_EMIT planChanged(*m_plan);
    else
        Q_EMIT planFailed(m_error);
}

void BudgetPanel::finishDims(quint64 generation, const Plan* plan, const QString& error)
{
    if (generation != m_dimGeneration || !m_compiling)
        return; // superseded
    m_compiling = false;
    if (plan) {
        m_plan = *plan;
        m_proxy = retainedRoutingMass(*m_snapshot, *m_plan);
    } else {
        m_error = error;
    }
    showResult();
    if (m_plan)
        Q_EMIT planChanged(*m_plan);
    else
        Q_EMIT planFailed(m_error);
}

void BudgetPanel::showResult()
{
    m_evaluate->setEnabled(m_plan.has_value());
    m_save->setEnabled(m_plan.has_value());
    m_units->clear();
    m_units->setVisible(m_plan && m_plan->hasDims());
    m_routingRule->setPlan(m_plan ? &*m_plan : nullptr);
    if (!m_plan) {
        m_kept->setText(m_compiling ? tr("Selecting units…") : m_error);
        m_savings->clear();
        m_proxyLabel->clear();
        return;
    }
    const Plan& p = *m_plan;
    int total = 0;
    int lo = p.numExperts;
    int hi = 0;
    for (std::size_t i = 0; i < p.keep.size(); ++i) {
        total += p.keptIn(i);
        lo = std::min(lo, p.keptIn(i));
        hi = std::max(hi, p.keptIn(i));
    }
    const int all = p.numExperts * static_cast<int>(p.keep.size());
    m_kept->setText(tr("Keeps %1 of %2 routed experts (%3 per layer)")
                        .arg(total)
                        .arg(all)
                        .arg(lo == hi ? QString::number(lo) : QStringLiteral("%1–%2").arg(lo).arg(hi)));
    if (p.hasDims()) {
        int64_t units = 0;
        int narrow = static_cast<int>(p.dims.intermediate);
        int wide = 0;
        for (std::size_t i = 0; i < p.units.size(); ++i)
            for (const int w : dimWidths(p, i)) {
                units += w;
                narrow = std::min(narrow, w);
                wide = std::max(wide, w);
            }
        const int64_t of = static_cast<int64_t>(total) * p.dims.intermediate;
        m_units->setText(
            tr("Units (%1 by %2, %3):\n%4 of %5 kept (%6%), widths %7 of %8")
                .arg(QString::fromStdString(p.dims.scope), QString::fromStdString(p.dims.criterion),
                    p.dims.domain.empty() ? QStringLiteral("pooled") : QString::fromStdString(p.dims.domain))
                .arg(units)
                .arg(of)
                .arg(of > 0 ? 100.0 * static_cast<double>(units) / static_cast<double>(of) : 0.0, 0, 'f', 1)
                .arg(narrow == wide ? QString::number(wide) : QStringLiteral("%1–%2").arg(narrow).arg(wide))
                .arg(p.dims.intermediate));
    }
    if (m_snapshot->hasCosts && p.bytesBefore > 0) {
        m_savings->setText(tr("Checkpoint: %1 → %2%3\nParameters: %4 → %5%6\nActive parameters per token: %7 → %8")
                               .arg(gigabytes(p.bytesBefore), gigabytes(p.bytesAfter),
                                   reduction(static_cast<double>(p.bytesBefore), static_cast<double>(p.bytesAfter)),
                                   millions(p.paramsBefore), millions(p.paramsAfter),
                                   reduction(static_cast<double>(p.paramsBefore), static_cast<double>(p.paramsAfter)),
                                   millions(p.activeParamsBefore), millions(p.activeParamsAfter)));
    } else {
        m_savings->setText(m_snapshot->costsNote);
    }
    if (m_proxy.source.empty()) {
        m_proxyLabel->setText(tr("No soft_mass scores or load_share statistics: no quality proxy."));
    } else {
        QString text = tr("Retained routing mass (%1):").arg(QString::fromStdString(m_proxy.source));
        const QStringList names = m_snapshot->domainNames();
        for (std::size_t d = 0; d < m_proxy.perDomain.size(); ++d)
            text += QStringLiteral("\n  %1: %2%")
                        .arg(names[static_cast<int>(d)])
                        .arg(100.0 * m_proxy.perDomain[d], 0, 'f', 1);
        m_proxyLabel->setText(text);
    }
}

QString BudgetPanel::statusText() const
{
    return m_kept->text();
}

bool BudgetPanel::savePlan(const QString& path, QString* error) const
{
    if (!m_plan) {
        if (error)
            *error = tr("No plan to save: %1").arg(m_error);
        return false;
    }
    try {
        writeFileAtomically(path.toStdString(), planToJson(*m_plan).dump(2) + "\n");
        return true;
    } catch (const std::exception& e) {
        if (error)
            *error = tr("Cannot save %1: %2").arg(path, QString::fromUtf8(e.what()));
        return false;
    }
}

void BudgetPanel::saveWithDialog()
{
    const QString path
        = QFileDialog::getSaveFileName(this, tr("Save plan"), QStringLiteral("plan.json"), tr("Plans (*.json)"));
    if (path.isEmpty())
        return;
    QString error;
    if (savePlan(path, &error))
        Q_EMIT message(tr("Plan written to %1").arg(path));
    else
        Q_EMIT message(error);
}

} // namespace moeatlas::views
