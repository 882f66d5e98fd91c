#include "checkpoint/mxfp4.h"

#include <array>
#include <cmath>
#include <cstddef>

namespace moeatlas {

float decodeE2M1(uint8_t nibble)
{
    // Exponent bits 2..1, mantissa bit 0: subnormal 0 / 0.5 at exponent 0, else 2^(e-1) * (1 + m/2).
    const int e = (nibble >> 1) & 0x3, m = nibble & 0x1;
    const float mag = e == 0 ? 0.5f * static_cast<float>(m) : std::ldexp(1.0f + 0.5f * static_cast<float>(m), e - 1);
    return (nibble & 0x8) ? -mag : mag;
}

void decodeMxfp4(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t cols, float* out)
{
    static const std::array<float, 16> table = [] {
        std::array<float, 16> t {};
        for (int i = 0; i < 16; ++i)
            t[static_cast<std::size_t>(i)] = decodeE2M1(static_cast<uint8_t>(i));
        return t;
    }();
    const int64_t groups = rows * (cols / 32);
    for (int64_t g = 0; g < groups; ++g) {
        const int exponent = static_cast<int>(scales[g]) - 127;
        const uint8_t* b = blocks + g * 16;
        float* o = out + g * 32;
        for (std::ptrdiff_t i = 0; i < 16; ++i) {
            o[2 * i] = std::ldexp(table[b[i] & 0x0F], exponent);
            o[2 * i + 1] = std::ldexp(table[b[i] >> 4], exponent);
        }
    }
}

} // namespace moeatlas
