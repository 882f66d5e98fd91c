// libFuzzer target for the safetensors reader: the input is a whole .safetensors file (u64 header
// length, JSON header, data). Opening it either succeeds, and every tensor's byte span then lies
// inside the file, or throws InputError; nothing else may escape.
#include "checkpoint/safetensors.h"
#include "fuzz_support.h"
#include "util/error.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const auto path = moeatlas::fuzz::writeFile("model.safetensors", moeatlas::fuzz::asText(data, size));
    try {
        const moeatlas::SafetensorsFile file(path);
        unsigned sum = 0;
        for (const std::string& name : file.names()) {
            const moeatlas::TensorInfo& info = file.info(name);
            const auto bytes = file.bytes(name);
            if (bytes.size() != info.byteSize())
                std::abort();
            // Touch the first and last byte: ASan and the mapping catch a span outside the file.
            if (!bytes.empty())
                sum += static_cast<unsigned>(bytes.front()) + static_cast<unsigned>(bytes.back());
            (void)info.numel();
        }
        for (const auto& [key, value] : file.metadata())
            sum += static_cast<unsigned>(key.size() + value.size());
        volatile unsigned sink = sum;
        (void)sink;
    } catch (const moeatlas::InputError&) {
    }
    return 0;
}
