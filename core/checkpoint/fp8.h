// FP8 block-scaled weights as DeepSeek-V3-style hub checkpoints store them (transformers' "fp8" quantization,
// FineGrainedFP8Config): every quantized weight W [..., rows, cols] is float8_e4m3fn (safetensors "F8_E4M3")
// with a float32 `<name>_scale_inv` [..., ceil(rows / br), ceil(cols / bc)], one value per br x bc block
// (partial blocks at the edges), and W[r][c] = e4m3(q[r][c]) * scale_inv[r / br][c / bc] (docs/decisions.md 55).
// No LibTorch: decoding, quantizing and validation work on the mapped bytes.
#pragma once

#include "checkpoint/model_spec.h"

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace moeatlas {

class Checkpoint;

// The value of an OCP E4M3 byte as torch.float8_e4m3fn defines it: sign bit 7, exponent bits 6..3 (bias 7),
// mantissa bits 2..0; exponent 0 is subnormal (m/8 * 2^-6); 0x7f and 0xff are NaN (no infinities); max 448.
float decodeE4M3(uint8_t byte);
// E5M2 (torch.float8_e5m2): exponent bits 6..2 (bias 15), mantissa 1..0, IEEE-like infinities and NaNs.
float decodeE5M2(uint8_t byte);
// The 256 values of decodeE4M3 / decodeE5M2, built once.
const std::array<float, 256>& e4m3Table();
const std::array<float, 256>& e5m2Table();
// The nearest E4M3 byte to v (ties to the even code), saturating at +-448; NaN gives 0x7f.
uint8_t encodeE4M3(float v);

// The block grid of a weight shape: the leading dimensions as they are, the last two divided by the block
// (ceil division). Throws std::invalid_argument for fewer than two dimensions.
std::vector<int64_t> fp8ScaleShape(const std::vector<int64_t>& weightShape, const Fp8Quantization& q);
// "<weight>_scale_inv": "x.weight" -> "x.weight_scale_inv", fused "experts.gate_up_proj" ->
// "experts.gate_up_proj_scale_inv" (transformers' naming for FP8Linear and FP8Experts).
std::string fp8ScaleName(const std::string& weight);
bool isFp8ScaleName(const std::string& name);

// Dequantizes one matrix of `rows` x `cols` E4M3 bytes with its [ceil(rows/br), ceil(cols/bc)] scales into
// out (row-major float32).
void dequantizeFp8(const uint8_t* bytes, const float* scales, int64_t rows, int64_t cols, int64_t blockRows,
    int64_t blockCols, float* out);
// Quantizes one matrix of float32 values: per block, scale = max|v| / 448 (1 for an all-zero block), the bytes
// encodeE4M3(v / scale); writes bytes [rows, cols] and scales [ceil(rows/br), ceil(cols/bc)].
void quantizeFp8(const float* values, int64_t rows, int64_t cols, int64_t blockRows, int64_t blockCols, uint8_t* bytes,
    float* scales);

// config.json's `quantization_config` (`source` names the file in errors). Absent: nothing quantized.
// quant_method "fp8": fmt "e4m3" (or absent), activation_scheme "dynamic" (or absent), weight_block_size two
// positive integers, scale_fmt "float" and expert_dtype "fp8" when present. quant_method "mxfp4" is gpt_oss'
// (TensorLayout detects its packed tensors) and gives no FP8. Anything else throws InputError naming the field.
Fp8Quantization parseQuantizationConfig(const nlohmann::json& config, const std::string& source);

// Checks every FP8 tensor of the checkpoint against the spec's quantization: with FP8 quantization each
// F8_E4M3 tensor of two or more dimensions has `<name>_scale_inv` F32 of fp8ScaleShape, the embedding is not
// FP8, and no scale tensor is left without its weight; without it, no F8 tensor has a scale tensor. Throws
// InputError naming the shard file, the tensor and what was expected.
void validateFp8Tensors(const Checkpoint& checkpoint, const ModelSpec& spec, const std::string& embedName);

// True when `name` is an FP8 block-scaled weight under the spec (F8_E4M3 with FP8 quantization on).
bool isFp8Scaled(const Checkpoint& checkpoint, const ModelSpec& spec, const std::string& name);

} // namespace moeatlas
