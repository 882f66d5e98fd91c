// Human-readable quantities for messages and reports.
#pragma once

#include <cstdint>
#include <string>

namespace moeatlas {

// "1.25 GiB", "3.00 MiB", "64.0 KiB": binary units, scaled to the largest that is >= 1.
std::string formatBytes(uint64_t bytes);
// "1.25B", "3.40M", "64.0K": a parameter count in decimal units.
std::string formatCount(int64_t n);

} // namespace moeatlas
