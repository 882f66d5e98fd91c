// The grouping of an evaluation table (core/eval's EvalTable, read from /evaluation/<label> by
// evalTableFromResults) into chart families (one curve per plan family), free of Qt Charts so the
// arithmetic is testable on its own.
#pragma once

#include "eval/eval.h"

#include <string>
#include <vector>

namespace moeatlas::views {

enum class TradeoffMetric { Nll, Perplexity };
double tradeoffValue(double nll, TradeoffMetric metric);

// One curve of the chart for one evaluated domain: points sorted by sparsity. Random plans
// are one family whose points are the mean per sparsity with min and max beside them.
struct TradeoffFamily {
    enum class Kind { Curve, Random, Plans };
    Kind kind = Kind::Curve;
    std::string label; // "specialist: math (peu)", "generalist (peu)", "random (mean of 2)", "plans"
    std::vector<double> x; // sparsity
    std::vector<double> y; // metric (mean for Random)
    std::vector<double> yMin, yMax; // Random only
    std::vector<std::string> names; // Curve/Plans: the variant name of each point
};

// Families in display order: specialists (by domain, then criterion), generalists, unions,
// random, then "plans": variants that are not from a sweep (plan files, method "plan"), one point
// each. The full model is not a family (see tradeoffFullValue).
std::vector<TradeoffFamily> tradeoffFamilies(const EvalTable& table, int domain, TradeoffMetric metric);
// The full model's value on `domain`, or NaN when it was not evaluated.
double tradeoffFullValue(const EvalTable& table, int domain, TradeoffMetric metric);

} // namespace moeatlas::views
