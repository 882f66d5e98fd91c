#include "heatmap_model.h"

#include "atlas_document.h"
#include "fisher_data.h"
#include "plan/plan.h"
#include "util/error.h"

#include <QTextStream>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moeatlas::views {

namespace {

// The array behind a quantity: values [rows, layers, experts] and the names of its rows.
struct Source {
    const std::vector<double>* values = nullptr;
    uint64_t rows = 0, layers = 0, experts = 0;
    std::vector<std::string> rowNames; // Fisher only: the run's domains then "pooled"
};

Source sourceOf(const AtlasSnapshot& s, const HeatmapQuantity& q)
{
    Source out;
    if (q.kind == HeatmapQuantity::Kind::Fisher) {
        const std::string name = q.name.toStdString();
        const FisherSummaryForm* f
            = s.fisher && name.rfind("fisher_", 0) == 0 ? s.fisher->find(name.substr(7)) : nullptr;
        if (!f)
            return out;
        out.values = &f->experts;
        out.rows = static_cast<uint64_t>(f->rows);
        out.layers = s.fisher->layers.size();
        out.experts = static_cast<uint64_t>(s.fisher->numExperts);
        out.rowNames = f->rows == 1 ? std::vector<std::string> { "pooled" } : s.fisher->domains;
        return out;
    }
    const AtlasArray* a = q.kind == HeatmapQuantity::Kind::Score ? s.scoreArray(q.name.toStdString())
                                                                 : s.statisticsArray(q.name.toStdString());
    if (a && a->dims.size() == 3) {
        out.values = &a->values;
        out.rows = a->dims[0];
        out.layers = a->dims[1];
        out.experts = a->dims[2];
    } else if (a) {
        out.values = &a->values; // a malformed shape: refused by heatmapData
    }
    return out;
}

QString number(double v)
{
    return QString::number(v, 'g', 6);
}

} // namespace

std::vector<HeatmapQuantity> heatmapQuantities(const AtlasSnapshot& snapshot)
{
    std::vector<HeatmapQuantity> out;
    for (const QString& c : snapshot.criteria())
        out.push_back({ HeatmapQuantity::Kind::Score, c, 0 });
    for (const char* name : { "load_share", "specialisation" }) {
        if (snapshot.statisticsArray(name))
            out.push_back({ HeatmapQuantity::Kind::Statistic, QString::fromLatin1(name), 0 });
    }
    if (snapshot.fisher)
        for (const FisherSummaryForm& f : snapshot.fisher->forms)
            out.push_back({ HeatmapQuantity::Kind::Fisher, QString::fromStdString(fisherQuantityName(f.form)), 0 });
    return out;
}

int heatmapDomainRows(const AtlasSnapshot& snapshot, const HeatmapQuantity& quantity)
{
    const Source src = sourceOf(snapshot, quantity);
    return src.rows > 0 ? static_cast<int>(src.rows) : 0;
}

QStringList heatmapDomainNames(const AtlasSnapshot& snapshot, const HeatmapQuantity& quantity)
{
    const Source src = sourceOf(snapshot, quantity);
    const QStringList atlasDomains = snapshot.domainNames();
    QStringList names;
    for (uint64_t r = 0; r < src.rows; ++r) {
        if (!src.rowNames.empty())
            names << QString::fromStdString(src.rowNames[r]);
        else
            names << (r < static_cast<uint64_t>(atlasDomains.size()) ? atlasDomains[static_cast<int>(r)]
                                                                     : QStringLiteral("pooled"));
    }
    return names;
}

HeatmapData heatmapData(const AtlasSnapshot& snapshot, const HeatmapQuantity& quantity)
{
    const Source src = sourceOf(snapshot, quantity);
    const std::string what = quantity.name.toStdString();
    if (!src.values)
        throw InputError(snapshot.path.toStdString() + ": no " + what + " in the atlas ("
            + (quantity.kind == HeatmapQuantity::Kind::Fisher ? "Jobs > Compute Fisher…, or moeatlas fisher"
                                                              : "Jobs > Score atlas, or moeatlas score")
            + ")");
    const int L = snapshot.numLayers();
    const int E = snapshot.numExperts();
    if (src.rows == 0 || src.layers != static_cast<uint64_t>(L) || src.experts != static_cast<uint64_t>(E)
        || src.values->size() != src.rows * src.layers * src.experts || quantity.domainRow < 0
        || static_cast<uint64_t>(quantity.domainRow) >= src.rows)
        throw InputError(snapshot.path.toStdString() + ": " + what + " has an unexpected shape");
    if (quantity.kind == HeatmapQuantity::Kind::Fisher && snapshot.fisher->layers != snapshot.model.moeLayers)
        throw InputError(snapshot.path.toStdString() + ": the Fisher tables cover other MoE layers than the atlas");
    HeatmapData d;
    d.rows = L;
    d.cols = E;
    const auto plane = static_cast<std::size_t>(L) * E;
    const auto first = src.values->begin() + static_cast<std::ptrdiff_t>(plane * quantity.domainRow);
    d.values.assign(first, first + static_cast<std::ptrdiff_t>(plane));
    d.rowLabels = snapshot.model.moeLayers;
    d.quantity = quantity.name;
    d.domain = heatmapDomainNames(snapshot, quantity).at(quantity.domainRow);
    const int D = static_cast<int>(snapshot.domains.size());
    // Which domain each expert's load came from: load_counts[d, l, e] / sum over d.
    const AtlasArray* counts = snapshot.statisticsArray("load_counts");
    if (counts && counts->dims.size() == 3 && counts->dims[0] == static_cast<uint64_t>(D)
        && counts->dims[1] * counts->dims[2] == plane) {
        d.shareDomains = snapshot.domainNames();
        d.domainShares.assign(static_cast<std::size_t>(D), std::vector<double>(plane, 0.0));
        for (std::size_t i = 0; i < plane; ++i) {
            double total = 0;
            for (int k = 0; k < D; ++k)
                total += counts->values[k * plane + i];
            for (int k = 0; k < D; ++k)
                d.domainShares[k][i] = total > 0 ? counts->values[k * plane + i] / total : 0.0;
        }
    }
    return d;
}

HeatmapModel::HeatmapModel(QObject* parent)
    : QAbstractTableModel(parent)
{
}

void HeatmapModel::setHeatmap(HeatmapData data)
{
    beginResetModel();
    m_data = std::move(data);
    const int R = m_data.rows;
    const int C = m_data.cols;
    m_rank.assign(static_cast<std::size_t>(R) * C, 0);
    m_order.assign(static_cast<std::size_t>(R) * C, 0);
    m_kept.clear();
    std::vector<int> idx(static_cast<std::size_t>(C));
    for (int r = 0; r < R; ++r) {
        std::iota(idx.begin(), idx.end(), 0);
        // Highest first, NaN (no value) last; ties to the lower expert index (as the planner breaks
        // them). `>` alone is not a strict weak order once NaN is present.
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
            const double va = m_data.at(r, a), vb = m_data.at(r, b);
            if (std::isnan(va) || std::isnan(vb))
                return !std::isnan(va) && std::isnan(vb);
            return va > vb;
        });
        for (int p = 0; p < C; ++p) {
            m_order[offset(r, p)] = idx[p];
            m_rank[offset(r, idx[p])] = p + 1;
        }
    }
    endResetModel();
    Q_EMIT overlayChanged();
}

bool HeatmapModel::setPlan(const Plan& plan)
{
    if (plan.keep.size() != static_cast<std::size_t>(m_data.rows))
        return false;
    std::vector<uint8_t> kept(static_cast<std::size_t>(m_data.rows) * m_data.cols, 0);
    for (int r = 0; r < m_data.rows; ++r) {
        for (const int e : plan.keep[r]) {
            if (e < 0 || e >= m_data.cols)
                return false;
            kept[offset(r, e)] = 1;
        }
    }
    return setKeptMask(std::move(kept));
}

bool HeatmapModel::setKeptMask(std::vector<uint8_t> kept)
{
    if (kept.size() != static_cast<std::size_t>(m_data.rows) * m_data.cols)
        return false;
    m_kept = std::move(kept);
    if (m_data.rows > 0 && m_data.cols > 0)
        Q_EMIT dataChanged(QAbstractTableModel::index(0, 0),
            QAbstractTableModel::index(m_data.rows - 1, m_data.cols - 1), { KeptRole, Qt::ToolTipRole });
    Q_EMIT overlayChanged();
    return true;
}

void HeatmapModel::clearPlan()
{
    if (m_kept.empty())
        return;
    m_kept.clear();
    if (m_data.rows > 0 && m_data.cols > 0)
        Q_EMIT dataChanged(QAbstractTableModel::index(0, 0),
            QAbstractTableModel::index(m_data.rows - 1, m_data.cols - 1), { KeptRole, Qt::ToolTipRole });
    Q_EMIT overlayChanged();
}

bool HeatmapModel::isKept(int row, int col) const
{
    return m_kept.empty() || m_kept[offset(row, col)] != 0;
}

int HeatmapModel::keptInRow(int row) const
{
    if (m_kept.empty())
        return m_data.cols;
    const auto first = m_kept.begin() + static_cast<std::ptrdiff_t>(offset(row, 0));
    return static_cast<int>(std::count(first, first + m_data.cols, uint8_t { 1 }));
}

QString HeatmapModel::toolTip(int row, int col) const
{
    QString text = QStringLiteral("Layer %1, expert %2\n%3 (%4): %5\nRank in layer: %6 of %7")
                       .arg(m_data.rowLabel(row))
                       .arg(col)
                       .arg(m_data.quantity, m_data.domain, number(m_data.at(row, col)))
                       .arg(rank(row, col))
                       .arg(m_data.cols);
    if (hasPlan())
        text += isKept(row, col) ? QStringLiteral("\nKept by the plan") : QStringLiteral("\nDropped by the plan");
    if (!m_data.domainShares.empty()) {
        text += QStringLiteral("\nLoad by domain:");
        for (int d = 0; d < m_data.shareDomains.size(); ++d)
            text += QStringLiteral(" %1 %2%")
                        .arg(m_data.shareDomains[d])
                        .arg(100.0 * m_data.domainShares[d][offset(row, col)], 0, 'f', 1);
    }
    return text;
}

QString HeatmapModel::toCsv() const
{
    QString out;
    QTextStream s(&out);
    s << (hasPlan() ? "layer,expert,value,rank,kept\n" : "layer,expert,value,rank\n");
    for (int r = 0; r < m_data.rows; ++r) {
        for (int c = 0; c < m_data.cols; ++c) {
            s << m_data.rowLabel(r) << ',' << c << ',' << QString::number(m_data.at(r, c), 'g', 17) << ','
              << rank(r, c);
            if (hasPlan())
                s << ',' << (isKept(r, c) ? 1 : 0);
            s << '\n';
        }
    }
    return out;
}

int HeatmapModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : m_data.rows;
}

int HeatmapModel::columnCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : m_data.cols;
}

QVariant HeatmapModel::data(const QModelIndex& idx, int role) const
{
    if (!checkIndex(idx, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
        return {};
    const int r = idx.row();
    const int c = idx.column();
    switch (role) {
    case Qt::DisplayRole:
    case ValueRole:
        return m_data.at(r, c);
    case Qt::ToolTipRole:
        return toolTip(r, c);
    case RankRole:
        return rank(r, c);
    case KeptRole:
        return hasPlan() ? QVariant(isKept(r, c)) : QVariant();
    case LayerRole:
        return m_data.rowLabel(r);
    case ExpertRole:
        return c;
    default:
        return {};
    }
}

QVariant HeatmapModel::headerData(int section, Qt::Orientation orientation, int role) const
{
    if (role != Qt::DisplayRole || section < 0)
        return {};
    if (orientation == Qt::Vertical)
        return section < m_data.rows ? QVariant(QStringLiteral("L%1").arg(m_data.rowLabel(section))) : QVariant();
    return section < m_data.cols ? QVariant(QStringLiteral("E%1").arg(section)) : QVariant();
}

QHash<int, QByteArray> HeatmapModel::roleNames() const
{
    QHash<int, QByteArray> names = QAbstractTableModel::roleNames();
    names.insert(ValueRole, "value");
    names.insert(RankRole, "rank");
    names.insert(KeptRole, "kept");
    names.insert(LayerRole, "layer");
    names.insert(ExpertRole, "expert");
    return names;
}

} // namespace moeatlas::views
