#include "checkpoint/dtype.h"

#include <array>
#include <utility>

namespace moeatlas {

namespace {

struct DTypeRow {
    DType type;
    std::string_view name;
    std::size_t size;
    bool floating;
};

// One table drives size, spelling and parsing so the three can never disagree.
constexpr std::array<DTypeRow, 12> kDTypes { {
    { DType::F64, "F64", 8, true },
    { DType::F32, "F32", 4, true },
    { DType::F16, "F16", 2, true },
    { DType::BF16, "BF16", 2, true },
    { DType::F8_E4M3, "F8_E4M3", 1, true },
    { DType::F8_E5M2, "F8_E5M2", 1, true },
    { DType::I64, "I64", 8, false },
    { DType::I32, "I32", 4, false },
    { DType::I16, "I16", 2, false },
    { DType::I8, "I8", 1, false },
    { DType::U8, "U8", 1, false },
    { DType::BOOL, "BOOL", 1, false },
} };

const DTypeRow& row(DType t)
{
    for (const DTypeRow& r : kDTypes)
        if (r.type == t)
            return r;
    // Unreachable for valid enum values; fall back to F32 rather than invoking UB.
    return kDTypes[1];
}

} // namespace

std::size_t dtypeSize(DType t)
{
    return row(t).size;
}

std::string_view dtypeName(DType t)
{
    return row(t).name;
}

std::optional<DType> parseDType(std::string_view name)
{
    for (const DTypeRow& r : kDTypes)
        if (r.name == name)
            return r.type;
    return std::nullopt;
}

bool isFloatingPoint(DType t)
{
    return row(t).floating;
}

} // namespace moeatlas
