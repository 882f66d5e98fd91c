// Small helpers shared by the core suites: whole-file text I/O and catching the engine's
// InputError as a message (header-only: suites bring moeatlas_util through their own LIBS).
#pragma once

#include "util/error.h"

#include <QString>

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

} // namespace moeatlas::test
