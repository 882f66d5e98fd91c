// BudgetPanel, continued: the programmatic counterparts of its controls (tests, scripting), each
// setting or reading one widget as a user would; budget_panel.cpp builds the panel and compiles plans.
#include "budget_panel.h"

#include "fisher/fisher_store.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QGroupBox>
#include <QSlider>

namespace moeatlas::views {

void BudgetPanel::setCriterion(const QString& criterion)
{
    m_criterion->setCurrentText(criterion);
}

QString BudgetPanel::criterion() const
{
    return m_criterion->currentText();
}

void BudgetPanel::setTargetDomain(const QString& domain)
{
    const int i = domain.isEmpty() ? 0 : m_target->findData(domain);
    if (i >= 0)
        m_target->setCurrentIndex(i);
}

QString BudgetPanel::targetDomain() const
{
    return m_target->currentData().toString();
}

void BudgetPanel::setCustomWeights(bool custom)
{
    m_customWeights->setChecked(custom);
}

void BudgetPanel::setDomainWeight(const QString& domain, int weight)
{
    for (auto& [name, slider] : m_weights) {
        if (name == domain)
            slider->setValue(weight);
    }
}

void BudgetPanel::setScope(BudgetScope scope)
{
    m_scope->setCurrentIndex(scope == BudgetScope::Global ? 1 : 0);
}

BudgetScope BudgetPanel::scope() const
{
    return m_scope->currentIndex() == 1 ? BudgetScope::Global : BudgetScope::Uniform;
}

void BudgetPanel::setBudgetKind(BudgetKind kind)
{
    m_kind->setCurrentIndex(static_cast<int>(kind));
}

BudgetPanel::BudgetKind BudgetPanel::budgetKind() const
{
    return static_cast<BudgetKind>(std::max(0, m_kind->currentIndex()));
}

void BudgetPanel::setSparsityPercent(int percent)
{
    m_slider->setValue(percent);
}

int BudgetPanel::sparsityPercent() const
{
    return m_slider->value();
}

void BudgetPanel::setTargetAmount(double amount)
{
    m_amount->setValue(amount);
}

void BudgetPanel::setDimsEnabled(bool enabled)
{
    m_dims->setChecked(enabled && m_dims->isEnabled()); // disabled: the atlas has no Fisher tables
}

bool BudgetPanel::dimsEnabled() const
{
    return m_dims->isChecked();
}

void BudgetPanel::setDimScope(DimScope scope)
{
    m_dimScope->setCurrentIndex(m_dimScope->findData(static_cast<int>(scope)));
}

DimScope BudgetPanel::dimScope() const
{
    return static_cast<DimScope>(m_dimScope->currentData().toInt());
}

void BudgetPanel::setDimSparsityPercent(int percent)
{
    m_dimSlider->setValue(percent);
}

int BudgetPanel::dimSparsityPercent() const
{
    return m_dimSlider->value();
}

void BudgetPanel::setDimForm(const QString& form)
{
    const int i = m_dimForm->findData(QString::fromStdString(canonicalFisherForm(form.toStdString())));
    if (i >= 0)
        m_dimForm->setCurrentIndex(i);
}

QString BudgetPanel::dimForm() const
{
    return m_dimForm->currentData().toString();
}

DimBudget BudgetPanel::dimBudget() const
{
    return DimBudget { dimScope(), m_dimSlider->value() / 100.0 };
}

} // namespace moeatlas::views
