#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace moeatlas {

namespace {

// base^(2i/dim) evaluated in float32 like torch does (arange(...).float() / dim, then pow).
std::vector<float> defaultInvFreq(double base, int64_t dim)
{
    std::vector<float> inv(static_cast<std::size_t>(dim / 2));
    for (int64_t i = 0; i < dim / 2; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
        inv[static_cast<std::size_t>(i)] = 1.0f / std::pow(static_cast<float>(base), exponent);
    }
    return inv;
}

double yarnMscale(double scale, double mscale)
{
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

void applyYarn(const RopeSpec& r, int64_t dim, RopeTables& t, int64_t maxPositions)
{
    double factor = r.factor;
    if (factor <= 0.0)
        factor = static_cast<double>(maxPositions) / static_cast<double>(r.originalMaxPositionEmbeddings);
    if (r.attentionFactor) {
        t.attentionScaling = static_cast<float>(*r.attentionFactor);
    } else if (r.mscale != 0.0 && r.mscaleAllDim != 0.0) {
        t.attentionScaling = static_cast<float>(yarnMscale(factor, r.mscale) / yarnMscale(factor, r.mscaleAllDim));
    } else {
        t.attentionScaling = static_cast<float>(yarnMscale(factor, 1.0));
    }
    const double base = r.theta;
    const auto correctionDim = [&](double rotations) {
        return (static_cast<double>(dim)
                   * std::log(static_cast<double>(r.originalMaxPositionEmbeddings) / (rotations * 2.0 * M_PI)))
            / (2.0 * std::log(base));
    };
    double low = correctionDim(r.betaFast);
    double high = correctionDim(r.betaSlow);
    if (r.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high)
        high += 0.001;
    for (int64_t i = 0; i < dim / 2; ++i) {
        const float posFreq = std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(dim));
        const float extrapolation = 1.0f / posFreq;
        const float interpolation = 1.0f / (static_cast<float>(factor) * posFreq);
        const float ramp = std::clamp(static_cast<float>((static_cast<double>(i) - low) / (high - low)), 0.0f, 1.0f);
        const float extrapolationFactor = 1.0f - ramp;
        t.invFreq[static_cast<std::size_t>(i)]
            = interpolation * (1.0f - extrapolationFactor) + extrapolation * extrapolationFactor;
    }
}

void applyLlama3(const RopeSpec& r, RopeTables& t)
{
    const double oldContext = static_cast<double>(r.originalMaxPositionEmbeddings);
    const double lowFreqWavelen = oldContext / r.lowFreqFactor;
    const double highFreqWavelen = oldContext / r.highFreqFactor;
    for (float& f : t.invFreq) {
        const double wavelen = 2.0 * M_PI / f;
        if (wavelen > lowFreqWavelen) {
            f = static_cast<float>(f / r.factor);
        } else if (wavelen >= highFreqWavelen) {
            const double smooth = (oldContext / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
            f = static_cast<float>((1.0 - smooth) * f / r.factor + smooth * f);
        }
    }
}

} // namespace

double mlaSoftmaxMscale(const RopeSpec& rope)
{
    if (rope.type == "default" || rope.mscaleAllDim == 0.0)
        return 1.0;
    return yarnMscale(rope.factor, rope.mscaleAllDim);
}

RopeTables computeRopeTables(const ModelSpec& spec, int64_t seqLen)
{
    const RopeSpec& r = spec.rope;
    RopeTables t;
    t.rotaryDim = static_cast<int64_t>(static_cast<double>(spec.headDim) * r.partialRotaryFactor);
    double base = r.theta;
    if (r.type == "dynamic" && seqLen > spec.maxPositionEmbeddings) {
        const double d = static_cast<double>(t.rotaryDim);
        base = r.theta
            * std::pow(r.factor * static_cast<double>(seqLen) / static_cast<double>(spec.maxPositionEmbeddings)
                    - (r.factor - 1.0),
                d / (d - 2.0));
    }
    t.invFreq = defaultInvFreq(base, t.rotaryDim);
    if (r.type == "linear") {
        for (float& f : t.invFreq)
            f = static_cast<float>(f / r.factor);
    } else if (r.type == "yarn") {
        applyYarn(r, t.rotaryDim, t, spec.maxPositionEmbeddings);
    } else if (r.type == "llama3") {
        applyLlama3(r, t);
    }
    return t;
}

} // namespace moeatlas
