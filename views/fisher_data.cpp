#include "fisher_data.h"

#include "fisher/fisher_store.h"
#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <functional>

namespace moeatlas::views {

std::string fisherQuantityName(const std::string& form)
{
    return "fisher_" + form;
}

std::string fisherCriterionName(const std::string& form)
{
    return form == "activation" || form == "magnitude" ? form : "fisher_" + form;
}

bool isExpertPlanForm(const std::string& form)
{
    return !fisherExpertForm("fisher_" + form).empty();
}

std::vector<ConcentrationCurve> concentrationCurves(const FisherSummary& s, const std::string& form, int layer)
{
    const FisherSummaryForm* f = s.find(form);
    const auto L = static_cast<int>(s.layers.size());
    if (!f || layer < -1 || layer >= L)
        return {};
    const std::size_t F = s.fractions.size();
    const auto column = static_cast<std::size_t>(layer < 0 ? L : layer);
    std::vector<ConcentrationCurve> out;
    for (int64_t r = 0; r < f->rows; ++r) {
        ConcentrationCurve c;
        c.label = f->rows == 1 ? f->form : s.domains[static_cast<std::size_t>(r)];
        c.fractions = s.fractions;
        const auto first = f->concentration.begin()
            + static_cast<std::ptrdiff_t>((static_cast<std::size_t>(r) * (L + 1) + column) * F);
        c.shares.assign(first, first + static_cast<std::ptrdiff_t>(F));
        out.push_back(std::move(c));
    }
    return out;
}

std::vector<AblationCurve> ablationCurves(const FisherAblationResults& results, int domain)
{
    std::vector<AblationCurve> out;
    if (domain < 0 || domain >= static_cast<int>(results.domains.size()))
        return out;
    for (const FisherAblationRow& v : results.variants) {
        if (v.ranking == "full")
            continue;
        auto it = std::find_if(out.begin(), out.end(), [&](const AblationCurve& c) { return c.ranking == v.ranking; });
        if (it == out.end()) {
            out.push_back({ v.ranking, {}, {} });
            it = out.end() - 1;
        }
        const auto at = std::upper_bound(it->removed.begin(), it->removed.end(), static_cast<double>(v.removed));
        const auto pos = at - it->removed.begin();
        it->removed.insert(at, static_cast<double>(v.removed));
        it->nll.insert(it->nll.begin() + pos, v.nll[static_cast<std::size_t>(domain)]);
    }
    return out;
}

double ablationFullLoss(const FisherAblationResults& results, int domain)
{
    const int full = results.fullIndex();
    if (full < 0 || domain < 0 || domain >= static_cast<int>(results.domains.size()))
        return std::nan("");
    return results.variants[static_cast<std::size_t>(full)].nll[static_cast<std::size_t>(domain)];
}

std::vector<double> unitProfile(const FisherTable& table, int row, int layer, int expert)
{
    if (row < 0 || row >= static_cast<int>(table.domains.size()) || layer < 0
        || layer >= static_cast<int>(table.layers.size()) || expert < 0 || expert >= table.numExperts)
        return {};
    const std::span<const float> units = table.rowUnits(row);
    const auto first = static_cast<std::size_t>((layer * table.numExperts + expert) * table.intermediate);
    std::vector<double> out(units.begin() + static_cast<std::ptrdiff_t>(first),
        units.begin() + static_cast<std::ptrdiff_t>(first + static_cast<std::size_t>(table.intermediate)));
    std::sort(out.begin(), out.end(), std::greater<>());
    return out;
}

FisherUnitStore::FisherUnitStore(std::filesystem::path atlas)
    : m_atlas(std::move(atlas))
{
}

std::shared_ptr<const FisherTable> FisherUnitStore::load(const std::string& form)
{
    if (auto table = peek(form))
        return table;
    // Read without holding the lock (HDF5 serialises itself); a concurrent read of the same form
    // gives an equal table and the first stored wins.
    auto table = std::make_shared<const FisherTable>(readFisherTable(m_atlas, form));
    const std::lock_guard lock(m_mutex);
    return m_tables.try_emplace(table->form, table).first->second;
}

std::shared_ptr<const FisherTable> FisherUnitStore::peek(const std::string& form) const
{
    const std::lock_guard lock(m_mutex);
    const auto it = m_tables.find(canonicalFisherForm(form));
    return it == m_tables.end() ? nullptr : it->second;
}

void FisherUnitStore::insert(FisherTable table)
{
    auto shared = std::make_shared<const FisherTable>(std::move(table));
    const std::lock_guard lock(m_mutex);
    m_tables[shared->form] = std::move(shared);
}

} // namespace moeatlas::views
