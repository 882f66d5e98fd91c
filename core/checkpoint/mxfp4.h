// MXFP4 (OCP microscaling FP4) as gpt_oss hub checkpoints store their experts: per row of `cols` values,
// cols/32 blocks of 16 bytes (two E2M1 values per byte, the low nibble first) and one E8M0 scale byte per
// block (the block's values times 2^(scale - 127)).
#pragma once

#include <cstdint>

namespace moeatlas {

// The E2M1 value of a nibble: sign bit 3, then 0, 0.5, 1, 1.5, 2, 3, 4, 6.
float decodeE2M1(uint8_t nibble);

// Decodes `rows` rows of `cols` values (cols a multiple of 32): blocks [rows, cols/32, 16] bytes,
// scales [rows, cols/32] bytes, into out [rows, cols] floats (row-major).
void decodeMxfp4(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t cols, float* out);

} // namespace moeatlas
