#include "fisher_ablation_model.h"

#include "fisher/fisher_ablation.h"

#include <QTextStream>

#include <cmath>

namespace moeatlas::views {

FisherAblationModel::FisherAblationModel(QObject* parent)
    : QAbstractTableModel(parent)
{
}

void FisherAblationModel::setResults(std::shared_ptr<const FisherAblationResults> results)
{
    beginResetModel();
    m_results = std::move(results);
    endResetModel();
}

int FisherAblationModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() || !m_results ? 0 : static_cast<int>(m_results->variants.size());
}

int FisherAblationModel::columnCount(const QModelIndex& parent) const
{
    return parent.isValid() || !m_results ? 0 : FirstDomainColumn + 2 * static_cast<int>(m_results->domains.size());
}

QVariant FisherAblationModel::data(const QModelIndex& idx, int role) const
{
    if (!checkIndex(idx, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
        return {};
    const FisherAblationRow& v = m_results->variants[static_cast<std::size_t>(idx.row())];
    const int column = idx.column();
    if (role == Qt::TextAlignmentRole)
        return column >= RemovedColumn ? QVariant(Qt::AlignRight | Qt::AlignVCenter) : QVariant();
    if (column == VariantColumn)
        return role == Qt::DisplayRole ? QVariant(QString::fromStdString(v.name)) : QVariant();
    if (column == RankingColumn)
        return role == Qt::DisplayRole ? QVariant(QString::fromStdString(v.ranking)) : QVariant();
    if (column == RemovedColumn)
        return role == Qt::DisplayRole || role == ValueRole ? QVariant(static_cast<qint64>(v.removed)) : QVariant();
    const auto d = static_cast<std::size_t>((column - FirstDomainColumn) / 2);
    if ((column - FirstDomainColumn) % 2 == 0) { // loss
        switch (role) {
        case Qt::DisplayRole:
            return QString::number(v.nll[d], 'f', 4);
        case ValueRole:
            return v.nll[d];
        case Qt::ToolTipRole:
            return tr("perplexity %1").arg(std::exp(v.nll[d]), 0, 'f', 3);
        default:
            return {};
        }
    }
    const int full = m_results->fullIndex();
    if (full < 0 || full == idx.row() || (role != Qt::DisplayRole && role != ValueRole))
        return {};
    const double delta = v.nll[d] - m_results->variants[static_cast<std::size_t>(full)].nll[d];
    if (role == ValueRole)
        return delta;
    return QString((delta >= 0 ? QStringLiteral("+") : QString()) + QString::number(delta, 'f', 4));
}

QVariant FisherAblationModel::headerData(int section, Qt::Orientation orientation, int role) const
{
    if (role != Qt::DisplayRole || orientation != Qt::Horizontal || section < 0 || section >= columnCount())
        return {};
    switch (section) {
    case VariantColumn:
        return tr("variant");
    case RankingColumn:
        return tr("ranking");
    case RemovedColumn:
        return tr("removed");
    default: {
        const QString domain
            = QString::fromStdString(m_results->domains[static_cast<std::size_t>((section - FirstDomainColumn) / 2)]);
        return (section - FirstDomainColumn) % 2 == 0 ? tr("%1 loss").arg(domain) : tr("%1 Δ").arg(domain);
    }
    }
}

QString FisherAblationModel::toCsv() const
{
    QString out;
    QTextStream csv(&out);
    csv.setRealNumberPrecision(9);
    csv << "variant,ranking,removed,domain,tokens,nll,perplexity,delta_nll\n";
    if (!m_results)
        return out;
    const int full = m_results->fullIndex();
    for (const FisherAblationRow& v : m_results->variants)
        for (std::size_t d = 0; d < m_results->domains.size(); ++d) {
            csv << QString::fromStdString(v.name) << ',' << QString::fromStdString(v.ranking) << ',' << v.removed << ','
                << QString::fromStdString(m_results->domains[d]) << ',' << m_results->tokens[d] << ',' << v.nll[d]
                << ',' << std::exp(v.nll[d]) << ',';
            if (full >= 0)
                csv << v.nll[d] - m_results->variants[static_cast<std::size_t>(full)].nll[d];
            csv << '\n';
        }
    return out;
}

} // namespace moeatlas::views
