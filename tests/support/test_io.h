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

// The RequestError f throws: its field and message (both empty when it throws nothing; field
// "<wrong exception type>" for any other exception, with that exception's message if it has one).
struct CaughtRequestError {
    std::string field;
    QString message;
};
inline CaughtRequestError requestErrorOf(const std::function<void()>& f)
{
    try {
        f();
    } catch (const RequestError& e) {
        return { e.field(), QString::fromStdString(e.what()) };
    } catch (const std::exception& e) {
        return { "<wrong exception type>", QString::fromStdString(e.what()) };
    } catch (...) {
        return { "<wrong exception type>", {} };
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

// Largest |v[i]| (NaN ignored): the magnitude an error bound of an fp32 computation scales with.
inline double maxAbs(const std::vector<float>& v)
{
    double m = 0;
    for (const float x : v)
        if (!std::isnan(x))
            m = std::max(m, std::abs(static_cast<double>(x)));
    return m;
}

// Error model of two computations of the same fp32 quantities that differ only in the order of their
// sums -- another GEMM blocking (OpenBLAS picks its kernels by CPU: SkylakeX, Haswell, Zen ...), ATen's
// vector width (AVX-512 vs AVX2), a thread split, sliced vs masked experts: every sum of n terms may
// round differently, by up to ~n u max|term| (u = 2^-24), and the model's layers carry such
// differences forward. The bound is relative to the largest magnitude involved (`scale`, e.g. the
// largest |logit| of the reference): |a - b| <= kReorderRtol * scale. 2e-5 is ~170 ulp at the scale:
// 4-8x the largest difference measured under the SkylakeX, Haswell, Zen and Sandybridge kernels and
// both ATen CPU capabilities on the models of the suites (docs/testing.md, "Error model"), and still
// orders of magnitude below the changes the tests must detect (pruning moves logits by >= 1e-2 of
// scale). Results of one path, one thread count and one kernel are compared exactly instead.
constexpr double kReorderRtol = 2e-5;

// maxAbsDiff(a, b) as a fraction of `scale` (scale 0: the absolute difference).
inline double relDiff(const std::vector<float>& a, const std::vector<float>& b, double scale)
{
    return scale > 0 ? maxAbsDiff(a, b) / scale : maxAbsDiff(a, b);
}

} // namespace moeatlas::test
