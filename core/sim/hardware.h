// The machine an offload simulation runs on: GPU compute and memory bandwidth (roofline), and the
// host-to-device link the offloaded experts cross. Presets ship as editable JSON (resources/sim/).
#pragma once

#include "checkpoint/dtype.h"

#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace moeatlas {

struct HardwareSpec {
    std::string name; // preset name or file stem
    std::string gpu; // "NVIDIA RTX A6000 (48 GB GDDR6)"
    std::string link; // "PCIe 4.0 x16, host to device"
    std::string source; // where the numbers come from
    // Dense tensor-core FLOP/s per weight dtype key ("f32", "f16", "bf16", "f8"); see flopsKey().
    std::map<std::string, double> flopsPerSecond;
    double memoryBandwidth = 0; // GPU memory, bytes/s
    double linkBandwidth = 0; // host -> device, bytes/s, one copy stream
    double linkLatency = 0; // seconds added to every transfer (one transfer per expert)
};

// Reads a hardware JSON; `source` names the file in messages. Every field is required ("gpu", "link",
// "source", "flops_per_s", "memory_bytes_per_s", "link_bytes_per_s", "link_latency_s"): a missing field,
// a wrong type or a non-positive rate (latency: negative) is an InputError naming the file and the field.
HardwareSpec parseHardware(const nlohmann::json& doc, const std::string& source);

// The presets built into the binary (resources/sim/*.json at build time), sorted.
std::vector<std::string> hardwarePresetNames();
// The JSON text of a built-in preset (to copy and edit); RequestError(field) for an unknown name.
std::string hardwarePresetText(const std::string& name, const std::string& field);

// A preset name, or a path to a JSON file (anything with a '/' or ending in ".json"). RequestError(field)
// for an unknown preset name (listing the presets), InputError for a file that cannot be read or parsed.
HardwareSpec loadHardware(const std::string& presetOrPath, const std::string& field);

// RequestError(prefix + ".linkBandwidth" / ".memoryBandwidth" / ".flopsPerSecond" / ".linkLatency") for a
// rate that is not finite and > 0, or a negative latency: what a what-if override or a sweep may produce.
void validateHardware(const HardwareSpec& hw, const std::string& prefix);

// The flops_per_s key of a weight dtype: F32 "f32", F16 "f16", BF16 "bf16", F8_* "f8"; others: "".
std::string flopsKey(DType dtype);
// The FLOP/s for weights of `dtype`; RequestError(field) when the hardware lists none for it.
double flopsFor(const HardwareSpec& hw, DType dtype, const std::string& field);

} // namespace moeatlas
