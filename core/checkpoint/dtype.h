// Element types of safetensors files, as spelled in their headers ("F32", "BF16", ...).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace moeatlas {

enum class DType { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL };

// Bytes per element.
std::size_t dtypeSize(DType t);
// The safetensors spelling, e.g. "BF16".
std::string_view dtypeName(DType t);
// Parses the safetensors spelling; nullopt when unknown.
std::optional<DType> parseDType(std::string_view name);
bool isFloatingPoint(DType t);

} // namespace moeatlas
