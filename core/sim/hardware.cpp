#include "sim/hardware.h"

#include "sim/sim_presets.h"
#include "util/error.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace moeatlas {

namespace {

[[noreturn]] void fail(const std::string& source, const std::string& field, const std::string& what)
{
    throw InputError(source + ": field '" + field + "' " + what);
}

const nlohmann::json& required(const nlohmann::json& doc, const std::string& source, const std::string& field)
{
    const auto it = doc.find(field);
    if (it == doc.end())
        fail(source, field, "is missing (every hardware field is required)");
    return *it;
}

std::string requiredString(const nlohmann::json& doc, const std::string& source, const std::string& field)
{
    const nlohmann::json& v = required(doc, source, field);
    if (!v.is_string())
        fail(source, field, "must be a string");
    return v.get<std::string>();
}

double requiredNumber(const nlohmann::json& v, const std::string& source, const std::string& field, bool positive)
{
    if (!v.is_number())
        fail(source, field, "must be a number");
    const double x = v.get<double>();
    if (!std::isfinite(x) || (positive ? !(x > 0) : x < 0))
        fail(source, field, std::string("must be ") + (positive ? "> 0" : ">= 0") + ", got " + v.dump());
    return x;
}

std::string stemOf(const std::string& path)
{
    std::string s = path.substr(path.find_last_of('/') + 1);
    if (s.size() > 5 && s.ends_with(".json"))
        s.resize(s.size() - 5);
    return s;
}

HardwareSpec parseText(const std::string& text, const std::string& source)
{
    const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object())
        throw InputError(source + ": not a JSON object (a hardware description)");
    HardwareSpec hw = parseHardware(doc, source);
    hw.name = stemOf(source);
    return hw;
}

void requirePositive(double x, const std::string& field, const std::string& what)
{
    if (!std::isfinite(x) || !(x > 0))
        throw RequestError(field, what + " must be > 0, got " + std::to_string(x));
}

} // namespace

HardwareSpec parseHardware(const nlohmann::json& doc, const std::string& source)
{
    HardwareSpec hw;
    hw.gpu = requiredString(doc, source, "gpu");
    hw.link = requiredString(doc, source, "link");
    hw.source = requiredString(doc, source, "source");
    const nlohmann::json& flops = required(doc, source, "flops_per_s");
    if (!flops.is_object() || flops.empty())
        fail(source, "flops_per_s", "must be an object of dtype -> FLOP/s (\"bf16\": 1.5e14, ...)");
    for (const auto& [key, value] : flops.items()) {
        if (key != "f32" && key != "f16" && key != "bf16" && key != "f8")
            fail(source, "flops_per_s." + key, "is not a dtype key: expected f32, f16, bf16 or f8");
        hw.flopsPerSecond[key] = requiredNumber(value, source, "flops_per_s." + key, true);
    }
    hw.memoryBandwidth
        = requiredNumber(required(doc, source, "memory_bytes_per_s"), source, "memory_bytes_per_s", true);
    hw.linkBandwidth = requiredNumber(required(doc, source, "link_bytes_per_s"), source, "link_bytes_per_s", true);
    hw.linkLatency = requiredNumber(required(doc, source, "link_latency_s"), source, "link_latency_s", false);
    return hw;
}

std::vector<std::string> hardwarePresetNames()
{
    std::vector<std::string> names;
    names.reserve(detail::kSimPresetCount);
    for (std::size_t i = 0; i < detail::kSimPresetCount; ++i)
        names.emplace_back(detail::kSimPresets[i].name);
    std::sort(names.begin(), names.end());
    return names;
}

std::string hardwarePresetText(const std::string& name, const std::string& field)
{
    for (std::size_t i = 0; i < detail::kSimPresetCount; ++i)
        if (name == detail::kSimPresets[i].name)
            return detail::kSimPresets[i].text;
    std::string names;
    for (const std::string& n : hardwarePresetNames())
        names += (names.empty() ? "" : ", ") + n;
    throw RequestError(field,
        "unknown hardware preset '" + name + "': expected one of " + names + ", or a path to a hardware JSON file");
}

HardwareSpec loadHardware(const std::string& presetOrPath, const std::string& field)
{
    if (presetOrPath.empty())
        throw RequestError(field, "no hardware given: name a preset or a hardware JSON file");
    const bool isPath = presetOrPath.find('/') != std::string::npos || presetOrPath.ends_with(".json");
    if (!isPath) {
        HardwareSpec hw = parseText(hardwarePresetText(presetOrPath, field), "preset " + presetOrPath);
        hw.name = presetOrPath;
        return hw;
    }
    std::ifstream in(presetOrPath);
    if (!in)
        throw InputError(presetOrPath + ": cannot read the hardware file");
    std::stringstream text;
    text << in.rdbuf();
    return parseText(text.str(), presetOrPath);
}

void validateHardware(const HardwareSpec& hw, const std::string& prefix)
{
    requirePositive(hw.linkBandwidth, prefix + ".linkBandwidth", "link bandwidth (bytes/s) of '" + hw.name + "'");
    requirePositive(
        hw.memoryBandwidth, prefix + ".memoryBandwidth", "GPU memory bandwidth (bytes/s) of '" + hw.name + "'");
    if (hw.flopsPerSecond.empty())
        throw RequestError(prefix + ".flopsPerSecond", "hardware '" + hw.name + "' lists no FLOP/s");
    for (const auto& [key, value] : hw.flopsPerSecond)
        requirePositive(value, prefix + ".flopsPerSecond", "FLOP/s (" + key + ") of '" + hw.name + "'");
    if (!std::isfinite(hw.linkLatency) || hw.linkLatency < 0)
        throw RequestError(prefix + ".linkLatency",
            "link latency of '" + hw.name + "' must be >= 0 s, got " + std::to_string(hw.linkLatency));
}

std::string flopsKey(DType dtype)
{
    switch (dtype) {
    case DType::F32:
        return "f32";
    case DType::F16:
        return "f16";
    case DType::BF16:
        return "bf16";
    case DType::F8_E4M3:
    case DType::F8_E5M2:
        return "f8";
    default:
        return "";
    }
}

double flopsFor(const HardwareSpec& hw, DType dtype, const std::string& field)
{
    const auto it = hw.flopsPerSecond.find(flopsKey(dtype));
    if (it == hw.flopsPerSecond.end())
        throw RequestError(field,
            "hardware '" + hw.name + "' gives no FLOP/s for " + std::string(dtypeName(dtype))
                + " weights (flops_per_s has no \"" + flopsKey(dtype) + "\")");
    return it->second;
}

} // namespace moeatlas
