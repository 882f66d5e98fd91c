// The Fisher ablation table (/fisher/ablation) as a thin table model: one row per evaluated
// variant (the full model, then per n: top-n by pooled Fisher, by each domain's own, n random),
// columns variant, ranking, removed, then per evaluated domain its loss and the change from the full model.
#pragma once

#include <QAbstractTableModel>

#include <memory>

namespace moeatlas {
struct FisherAblationResults;
}

namespace moeatlas::views {

class FisherAblationModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { VariantColumn, RankingColumn, RemovedColumn, FirstDomainColumn };
    // Per domain d: column FirstDomainColumn + 2d = nll (nats per token), + 2d + 1 = delta vs full.
    enum Role { ValueRole = Qt::UserRole + 1 }; // the cell as a number (qint64 or double)

    explicit FisherAblationModel(QObject* parent = nullptr);

    // Replaces the table (model reset); null = empty.
    void setResults(std::shared_ptr<const FisherAblationResults> results);
    const FisherAblationResults* results() const { return m_results.get(); }
    // variant,ranking,removed,domain,tokens,nll,perplexity,delta_nll (one row per variant and domain).
    QString toCsv() const;

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    // DisplayRole: text (losses with 4 decimals, deltas signed); ValueRole: the number of the
    // removed and loss columns; the full model's delta is empty. ToolTipRole: perplexity of a loss.
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

private:
    std::shared_ptr<const FisherAblationResults> m_results;
};

} // namespace moeatlas::views
