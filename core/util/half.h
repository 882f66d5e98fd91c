// IEEE 754 binary16 ("half") <-> binary32 conversion, done by hand because HDF5 1.10 has no
// predefined half type and its soft float conversion is slow; the atlas stores fp16 router
// logits as raw binary16 bit patterns (see docs/atlas-format.md); generated F16 checkpoints use it too.
#pragma once

#include <bit>
#include <cstdint>

namespace moeatlas {

// Rounds to nearest, ties to even. Overflow (|x| >= 65520) gives +-inf, NaN stays NaN (quiet,
// keeping the top payload bits), values below half the smallest subnormal (2^-25) give +-0.
constexpr uint16_t floatToHalf(float value) noexcept
{
    const uint32_t bits = std::bit_cast<uint32_t>(value);
    const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    const uint32_t abs = bits & 0x7fffffffu;

    if (abs >= 0x7f800000u) { // inf or NaN
        if (abs == 0x7f800000u)
            return static_cast<uint16_t>(sign | 0x7c00u);
        // Force the quiet bit so a NaN whose payload sits only in the low bits stays a NaN.
        return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x03ffu));
    }
    if (abs >= 0x477ff000u) // >= 65520: rounds past 65504
        return static_cast<uint16_t>(sign | 0x7c00u);

    if (abs < 0x38800000u) { // below 2^-14: half subnormal or zero
        const uint32_t exponent = abs >> 23;
        if (exponent < 102) // < 2^-25 (ties at 2^-25 go to even 0)
            return sign;
        // Value = mantissa * 2^(exponent - 150); in units of 2^-24 that is mantissa >> shift.
        const uint32_t mantissa = (abs & 0x007fffffu) | 0x00800000u;
        const uint32_t shift = 126 - exponent; // 14..24
        uint32_t half = mantissa >> shift;
        const uint32_t rest = mantissa & ((1u << shift) - 1);
        const uint32_t midpoint = 1u << (shift - 1);
        if (rest > midpoint || (rest == midpoint && (half & 1u)))
            ++half; // may carry into the smallest normal: correct
        return static_cast<uint16_t>(sign | half);
    }

    // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits.
    uint32_t half = ((abs >> 23) - 112) << 10 | ((abs >> 13) & 0x03ffu);
    const uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        ++half; // a carry into the exponent is still right
    return static_cast<uint16_t>(sign | half);
}

// Exact: every binary16 value is representable in binary32.
constexpr float halfToFloat(uint16_t half) noexcept
{
    const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
    const uint32_t exponent = (half >> 10) & 0x1fu;
    uint32_t mantissa = half & 0x03ffu;

    if (exponent == 0x1fu) // inf or NaN
        return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0)
        return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
    if (mantissa == 0)
        return std::bit_cast<float>(sign);
    // Subnormal: normalise so the leading 1 becomes the implicit bit.
    uint32_t floatExponent = 113; // 2^-14 biased by 127
    while ((mantissa & 0x0400u) == 0) {
        mantissa <<= 1;
        --floatExponent;
    }
    return std::bit_cast<float>(sign | (floatExponent << 23) | ((mantissa & 0x03ffu) << 13));
}

} // namespace moeatlas
