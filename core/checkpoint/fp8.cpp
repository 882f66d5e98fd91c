#include "checkpoint/fp8.h"

#include "checkpoint/checkpoint.h"
#include "checkpoint/tensor_layout.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace moeatlas {

namespace {

constexpr float kE4M3Max = 448.0f;

int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

std::array<float, 256> buildTable(float (*decode)(uint8_t))
{
    std::array<float, 256> table {};
    for (int i = 0; i < 256; ++i)
        table[static_cast<std::size_t>(i)] = decode(static_cast<uint8_t>(i));
    return table;
}

} // namespace

float decodeE4M3(uint8_t byte)
{
    const int exponent = (byte >> 3) & 0xF, mantissa = byte & 0x7;
    float magnitude = 0.0f;
    if (exponent == 0xF && mantissa == 0x7)
        magnitude = NAN;
    else if (exponent == 0)
        magnitude = std::ldexp(static_cast<float>(mantissa) / 8.0f, -6);
    else
        magnitude = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
    return (byte & 0x80) ? -magnitude : magnitude;
}

float decodeE5M2(uint8_t byte)
{
    const int exponent = (byte >> 2) & 0x1F, mantissa = byte & 0x3;
    float magnitude = 0.0f;
    if (exponent == 0x1F)
        magnitude = mantissa ? NAN : INFINITY;
    else if (exponent == 0)
        magnitude = std::ldexp(static_cast<float>(mantissa) / 4.0f, -14);
    else
        magnitude = std::ldexp(1.0f + static_cast<float>(mantissa) / 4.0f, exponent - 15);
    return (byte & 0x80) ? -magnitude : magnitude;
}

const std::array<float, 256>& e4m3Table()
{
    static const std::array<float, 256> table = buildTable(decodeE4M3);
    return table;
}

const std::array<float, 256>& e5m2Table()
{
    static const std::array<float, 256> table = buildTable(decodeE5M2);
    return table;
}

uint8_t encodeE4M3(float v)
{
    if (std::isnan(v))
        return 0x7f;
    const auto sign = static_cast<uint8_t>(std::signbit(v) ? 0x80 : 0x00);
    const float a = std::fabs(v);
    if (a >= kE4M3Max)
        return static_cast<uint8_t>(sign | 0x7e);
    // Codes 0x00..0x7e are the non-negative values in increasing order: the first code not below `a` and the one
    // before it bracket it.
    const std::array<float, 256>& t = e4m3Table();
    const auto* hi = std::lower_bound(t.begin(), t.begin() + 0x7f, a);
    auto code = static_cast<uint8_t>(hi - t.begin());
    if (code > 0) {
        const float above = *hi - a, below = a - *(hi - 1);
        if (below < above || (below == above && (code & 1) != 0))
            --code;
    }
    return static_cast<uint8_t>(sign | code);
}

std::vector<int64_t> fp8ScaleShape(const std::vector<int64_t>& weightShape, const Fp8Quantization& q)
{
    if (weightShape.size() < 2)
        throw std::invalid_argument("fp8ScaleShape: a block-scaled weight has at least two dimensions");
    std::vector<int64_t> s = weightShape;
    const std::size_t n = s.size();
    s[n - 2] = ceilDiv(s[n - 2], q.blockRows);
    s[n - 1] = ceilDiv(s[n - 1], q.blockCols);
    return s;
}

std::string fp8ScaleName(const std::string& weight)
{
    return weight + "_scale_inv";
}

bool isFp8ScaleName(const std::string& name)
{
    return name.ends_with("_scale_inv");
}

void dequantizeFp8(const uint8_t* bytes, const float* scales, int64_t rows, int64_t cols, int64_t blockRows,
    int64_t blockCols, float* out)
{
    const std::array<float, 256>& t = e4m3Table();
    const int64_t scaleCols = ceilDiv(cols, blockCols);
    for (int64_t r = 0; r < rows; ++r) {
        const float* s = scales + (r / blockRows) * scaleCols;
        const uint8_t* q = bytes + r * cols;
        float* o = out + r * cols;
        for (int64_t c = 0; c < cols; ++c)
            o[c] = t[q[c]] * s[c / blockCols];
    }
}

void quantizeFp8(const float* values, int64_t rows, int64_t cols, int64_t blockRows, int64_t blockCols, uint8_t* bytes,
    float* scales)
{
    const int64_t gridRows = ceilDiv(rows, blockRows), gridCols = ceilDiv(cols, blockCols);
    for (int64_t br = 0; br < gridRows; ++br)
        for (int64_t bc = 0; bc < gridCols; ++bc) {
            const int64_t r0 = br * blockRows, r1 = std::min(rows, r0 + blockRows);
            const int64_t c0 = bc * blockCols, c1 = std::min(cols, c0 + blockCols);
            float amax = 0.0f;
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t c = c0; c < c1; ++c)
                    amax = std::max(amax, std::fabs(values[r * cols + c]));
            const float scale = amax > 0.0f ? amax / kE4M3Max : 1.0f;
            scales[br * gridCols + bc] = scale;
            for (int64_t r = r0; r < r1; ++r)
                for (int64_t c = c0; c < c1; ++c)
                    bytes[r * cols + c] = encodeE4M3(values[r * cols + c] / scale);
        }
}

Fp8Quantization parseQuantizationConfig(const nlohmann::json& config, const std::string& source)
{
    Fp8Quantization q;
    const auto it = config.find("quantization_config");
    if (it == config.end() || it->is_null())
        return q;
    const nlohmann::json& qc = *it;
    const auto fail = [&](const std::string& field, const std::string& why) {
        return InputError(source + ": field 'quantization_config." + field + "' " + why);
    };
    if (!qc.is_object())
        throw InputError(source + ": field 'quantization_config' must be an object, got " + qc.dump());
    const auto method = qc.find("quant_method");
    if (method == qc.end() || !method->is_string())
        throw fail("quant_method", "is missing or not a string (supported: \"fp8\" block-scaled, \"mxfp4\")");
    if (*method == "mxfp4")
        return q;
    if (*method != "fp8")
        throw fail("quant_method",
            "is " + method->dump()
                + " (supported: \"fp8\" block-scaled weights as DeepSeek-V3 ships them, and gpt_oss' \"mxfp4\"); "
                  "dequantize the checkpoint first");
    // Optional string fields and the one value each may take.
    const auto expect = [&](const char* field, const char* value, const std::string& why) {
        const auto f = qc.find(field);
        if (f != qc.end() && !f->is_null() && *f != value)
            throw fail(field, "is " + f->dump() + " (expected \"" + value + "\": " + why + ")");
    };
    expect("fmt", "e4m3", "weights stored as float8_e4m3fn");
    expect("activation_scheme", "dynamic",
        "the engine runs activations unquantized; static activation scales are not supported");
    expect("scale_fmt", "float", "float32 weight_scale_inv");
    expect("expert_dtype", "fp8", "FP4-packed experts are not supported");
    const auto block = qc.find("weight_block_size");
    if (block == qc.end() || block->is_null())
        throw fail("weight_block_size",
            "is missing (expected two positive integers, e.g. [128, 128]; per-tensor FP8 is not supported)");
    if (!block->is_array() || block->size() != 2 || !(*block)[0].is_number_integer() || !(*block)[1].is_number_integer()
        || (*block)[0].get<int64_t>() <= 0 || (*block)[1].get<int64_t>() <= 0)
        throw fail("weight_block_size", "is " + block->dump() + " (expected two positive integers, e.g. [128, 128])");
    q.enabled = true;
    q.blockRows = (*block)[0].get<int64_t>();
    q.blockCols = (*block)[1].get<int64_t>();
    return q;
}

bool isFp8Scaled(const Checkpoint& checkpoint, const ModelSpec& spec, const std::string& name)
{
    return spec.fp8.enabled && checkpoint.info(name).dtype == DType::F8_E4M3;
}

void validateFp8Tensors(const Checkpoint& checkpoint, const ModelSpec& spec, const std::string& embedName)
{
    const Fp8Quantization& q = spec.fp8;
    const std::string blocks
        = "weight_block_size [" + std::to_string(q.blockRows) + ", " + std::to_string(q.blockCols) + "]";
    for (const std::string& name : checkpoint.names()) {
        const TensorInfo& info = checkpoint.info(name);
        const std::string file = checkpoint.fileOf(name).path().string();
        const auto fail = [&](const std::string& tensor, const std::string& why) {
            return InputError(file + ": tensor '" + tensor + "' " + why);
        };
        if (isFp8ScaleName(name)) {
            const std::string weight = name.substr(0, name.size() - std::string("_scale_inv").size());
            if (!checkpoint.contains(weight))
                throw fail(name, "is an FP8 block scale without its weight '" + weight + "'");
            if (!q.enabled
                && (checkpoint.info(weight).dtype == DType::F8_E4M3 || checkpoint.info(weight).dtype == DType::F8_E5M2))
                throw InputError(file + ": tensor '" + name + "' scales the FP8 weight '" + weight
                    + "' but config.json has no quantization_config with quant_method \"fp8\"");
            if (q.enabled && checkpoint.info(weight).dtype != DType::F8_E4M3)
                throw fail(name,
                    "scales '" + weight + "', which is " + std::string(dtypeName(checkpoint.info(weight).dtype))
                        + ", not F8_E4M3");
            continue;
        }
        if (!q.enabled)
            continue;
        if (info.dtype == DType::F8_E5M2)
            throw fail(name, "has dtype F8_E5M2, expected F8_E4M3 (quantization_config.fmt \"e4m3\")");
        if (info.dtype != DType::F8_E4M3)
            continue;
        if (info.shape.size() < 2)
            throw fail(name,
                "is F8_E4M3 with shape " + formatShape(info.shape)
                    + ", expected a matrix (block-scaled FP8 weights have two or more dimensions)");
        if (name == embedName)
            throw fail(name, "is F8_E4M3: FP8 embeddings are not supported (only linear weights)");
        const std::string scale = fp8ScaleName(name);
        const std::vector<int64_t> want = fp8ScaleShape(info.shape, q);
        if (!checkpoint.contains(scale))
            throw fail(name,
                "is F8_E4M3 but its block scales '" + scale + "' are missing (expected F32 " + formatShape(want)
                    + " for " + blocks + ")");
        const TensorInfo& s = checkpoint.info(scale);
        const std::string scaleFile = checkpoint.fileOf(scale).path().string();
        if (s.dtype != DType::F32)
            throw InputError(scaleFile + ": tensor '" + scale + "' has dtype " + std::string(dtypeName(s.dtype))
                + ", expected F32 (quantization_config.scale_fmt \"float\")");
        if (s.shape != want)
            throw InputError(scaleFile + ": tensor '" + scale + "' has shape " + formatShape(s.shape) + ", expected "
                + formatShape(want) + ": one scale per block of '" + name + "' " + formatShape(info.shape) + " at "
                + blocks + " (partial blocks at the edges)");
    }
}

} // namespace moeatlas
