// Small helpers shared by the core suites: whole-file text I/O and catching the engine's
// InputError as a message (header-only: suites bring moeatlas_util through their own LIBS).
#pragma once

#include "util/error.h"

#include <QString>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

namespace moeatlas::test {

inline std::string readText(const std::filesystem::path& p)
{
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

inline void writeText(const std::filesystem::path& p, const std::string& text)
{
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
}

// The InputError message f throws; empty when it throws nothing, a marker for another exception.
inline QString inputErrorOf(const std::function<void()>& f)
{
    try {
        f();
    } catch (const InputError& e) {
        return QString::fromStdString(e.what());
    } catch (...) {
        return QStringLiteral("<wrong exception type>");
    }
    return {};
}

// Largest |a[i] - b[i]|; infinity when the sizes differ or one side is NaN where the other is not
// (NaN in both places counts as equal: e.g. positions with no next token).
inline double maxAbsDiff(const std::vector<float>& a, const std::vector<float>& b)
{
    if (a.size() != b.size())
        return std::numeric_limits<double>::infinity();
    double m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (std::isnan(a[i]) || std::isnan(b[i])) {
            if (std::isnan(a[i]) != std::isnan(b[i]))
                return std::numeric_limits<double>::infinity();
            continue;
        }
        m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    }
    return m;
}

} // namespace moeatlas::test
