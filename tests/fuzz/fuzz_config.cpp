// libFuzzer target for config.json -> ModelSpec: the input is a config.json, parsed as the
// checkpoint reader parses it and read by parseModelSpec. Only InputError may escape; invalid JSON
// is the checkpoint reader's InputError and not exercised further.
#include "checkpoint/hf_config.h"
#include "fuzz_support.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const nlohmann::json config = nlohmann::json::parse(moeatlas::fuzz::asText(data, size), nullptr, false);
    if (config.is_discarded())
        return 0;
    try {
        const moeatlas::ModelSpec spec = moeatlas::parseModelSpec(config, "fuzz/config.json");
        (void)spec;
    } catch (const moeatlas::InputError&) {
    }
    return 0;
}
