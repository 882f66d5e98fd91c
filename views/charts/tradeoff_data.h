// The trade-off table of an atlas (/evaluation/<label>, docs/atlas-format.md "Evaluation tables")
// as plain values, and its grouping into chart families (one curve per plan family), free of Qt
// Charts so the arithmetic is testable on its own.
#pragma once

#include "atlas/atlas_file.h"

#include <string>
#include <vector>

namespace moeatlas::views {

struct TradeoffVariant {
    std::string name;
    std::string method; // full | specialist | generalist | union | random | plan
    std::string criterion;
    std::string domain; // target domain of a specialist
    double sparsity = 0;
    double keptExperts = 0;
    std::vector<double> nll; // per evaluated domain
};

struct TradeoffTable {
    std::vector<std::string> domains;
    std::vector<double> tokens; // predicted tokens per domain
    std::vector<TradeoffVariant> variants;
    int fullIndex() const; // -1 when the full model was not evaluated
};

// Throws InputError when arrays or params are missing or their shapes disagree.
TradeoffTable tradeoffTableFromResults(const AtlasResults& results);

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
std::vector<TradeoffFamily> tradeoffFamilies(const TradeoffTable& table, int domain, TradeoffMetric metric);
// The full model's value on `domain`, or NaN when it was not evaluated.
double tradeoffFullValue(const TradeoffTable& table, int domain, TradeoffMetric metric);

} // namespace moeatlas::views
