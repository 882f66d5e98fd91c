#include "plan/routing_active.h"

#include "plan/dim_plan.h"
#include "util/error.h"

namespace moeatlas {

double activeParamsPerRoutedExpert(const Plan& plan, const PlanContext& ctx, std::size_t i)
{
    const PlanCosts& c = ctx.costs;
    const auto full = static_cast<double>(c.expertParams.at(i) - c.routerRowParams);
    if (!plan.hasDims() || plan.keep[i].empty() || c.unitParams.size() != plan.keep.size())
        return full;
    int64_t width = 0;
    for (const int w : dimWidths(plan, i))
        width += w;
    const auto I = static_cast<double>(plan.dims.intermediate);
    const double meanWidth = static_cast<double>(width) / static_cast<double>(plan.keep[i].size());
    return full - (I - meanWidth) * static_cast<double>(c.unitParams[i]);
}

double predictedActiveParams(const Plan& plan, const PlanContext& ctx, const std::vector<double>& meanK)
{
    if (plan.activeParamsBefore <= 0 || ctx.costs.expertParams.size() != plan.keep.size())
        throw InputError("the plan has no parameter costs (the atlas's checkpoint is needed to count them)");
    if (meanK.size() != plan.keep.size())
        throw InputError("mean k for " + std::to_string(meanK.size()) + " MoE layers, the plan has "
            + std::to_string(plan.keep.size()));
    double active = static_cast<double>(plan.activeParamsAfter);
    for (std::size_t i = 0; i < meanK.size(); ++i)
        active += (meanK[i] - ctx.topK) * activeParamsPerRoutedExpert(plan, ctx, i);
    return active;
}

} // namespace moeatlas
