#include "util/format.h"

#include <cstdio>

namespace moeatlas {

std::string formatBytes(uint64_t bytes)
{
    char buf[32];
    const double b = static_cast<double>(bytes);
    if (b >= 1024.0 * 1024 * 1024)
        std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024)
        std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
    else
        std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
    return buf;
}

std::string formatCount(int64_t n)
{
    char buf[32];
    const double v = static_cast<double>(n);
    if (v >= 1e9)
        std::snprintf(buf, sizeof buf, "%.2fB", v / 1e9);
    else if (v >= 1e6)
        std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
    else
        std::snprintf(buf, sizeof buf, "%.1fK", v / 1e3);
    return buf;
}

} // namespace moeatlas
