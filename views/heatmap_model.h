// The expert heatmap's data: one value per (MoE layer, expert) with ranks within each layer and
// the kept/dropped flags of the current plan, as a table model (rows = layers, columns = experts).
#pragma once

#include <QAbstractTableModel>
#include <QString>
#include <QStringList>

#include <cstdint>
#include <vector>

namespace moeatlas {
struct Plan;
}

namespace moeatlas::views {

struct AtlasSnapshot;

// A plain matrix and what it shows. domainShares (optional) is [D][rows * cols]: the share of
// each expert's routed load that came from domain d (tooltips).
struct HeatmapData {
    int rows = 0;
    int cols = 0;
    std::vector<double> values; // row-major [rows, cols]
    std::vector<int> rowLabels; // decoder layer of each row; empty = 0..rows-1
    QString quantity; // "peu", "load_share", ...
    QString domain; // "math", "pooled", ...
    QStringList shareDomains;
    std::vector<std::vector<double>> domainShares;

    double at(int row, int col) const { return values[static_cast<std::size_t>(row) * cols + col]; }
    int rowLabel(int row) const { return rowLabels.empty() ? row : rowLabels[static_cast<std::size_t>(row)]; }
};

// What the heatmap can show of a snapshot: a score criterion's "value", a statistic with one
// value per (layer, expert) (load_share, specialisation) or a Fisher form's expert-level sums
// ("fisher_<form>": /fisher/<form>/experts, the sum of the expert's unit scores). Rows of those
// arrays are domains; the last row of a [D+1, L, E] array is the pooled one. Fisher rows are the
// Fisher run's domains (usually the atlas's); fisher_magnitude has one row.
struct HeatmapQuantity {
    enum class Kind { Score, Statistic, Fisher };
    Kind kind = Kind::Score;
    QString name;
    int domainRow = 0;
};
// Available quantities (scores, statistics, then Fisher forms) and the domain rows each one has.
std::vector<HeatmapQuantity> heatmapQuantities(const AtlasSnapshot& snapshot);
int heatmapDomainRows(const AtlasSnapshot& snapshot, const HeatmapQuantity& quantity);
// Names of those rows ("pooled" for the last row of a [D+1, ...] array or a single row).
QStringList heatmapDomainNames(const AtlasSnapshot& snapshot, const HeatmapQuantity& quantity);
// Throws moeatlas::Error when the quantity is absent or the array has the wrong shape.
HeatmapData heatmapData(const AtlasSnapshot& snapshot, const HeatmapQuantity& quantity);

class HeatmapModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Role {
        ValueRole = Qt::UserRole + 1, // double
        RankRole, // int, 1 = highest value in the layer (ties: lower expert first)
        KeptRole, // bool, the current plan keeps the expert; invalid QVariant without a plan
        LayerRole, // int, decoder layer index
        ExpertRole, // int
    };

    explicit HeatmapModel(QObject* parent = nullptr);

    // Replaces the matrix (model reset); the plan overlay is cleared.
    void setHeatmap(HeatmapData data);
    const HeatmapData& heatmap() const { return m_data; }

    // Overlay of a plan: kept[row * cols + col]. A plan whose shape does not match is ignored
    // (returns false). clearPlan() removes the overlay.
    bool setPlan(const Plan& plan);
    bool setKeptMask(std::vector<uint8_t> kept);
    void clearPlan();
    bool hasPlan() const { return !m_kept.empty(); }
    bool isKept(int row, int col) const;
    int keptInRow(int row) const;

    int rank(int row, int col) const { return m_rank[offset(row, col)]; }
    // Experts of a row ordered by rank (position 0 = rank 1).
    int expertAtRank(int row, int position) const { return m_order[offset(row, position)]; }
    QString toolTip(int row, int col) const;
    // The table as CSV: layer,expert,value,rank[,kept].
    QString toCsv() const;

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;
    QHash<int, QByteArray> roleNames() const override;

Q_SIGNALS:
    void overlayChanged();

private:
    std::size_t offset(int row, int col) const { return static_cast<std::size_t>(row) * m_data.cols + col; }

    HeatmapData m_data;
    std::vector<int> m_rank;
    std::vector<int> m_order;
    std::vector<uint8_t> m_kept;
};

} // namespace moeatlas::views
