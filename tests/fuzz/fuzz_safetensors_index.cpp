// libFuzzer target for a sharded checkpoint's model.safetensors.index.json: the input is the index,
// beside a fixed valid config.json and two valid shards. Opening the checkpoint either succeeds, and
// every tensor then resolves to a shard that holds it, or throws InputError; nothing else may escape.
#include "checkpoint/checkpoint.h"
#include "fuzz_support.h"
#include "util/error.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

// A shard holding one F32 tensor of shape [2] named `name`.
std::string shard(const std::string& name)
{
    std::string header = R"({")" + name + R"(": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
    while (header.size() % 8 != 0)
        header += ' ';
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i)
        bytes[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
    return bytes + header + std::string(8, '\x01');
}

const std::filesystem::path& checkpointDir()
{
    static const std::filesystem::path dir = [] {
        moeatlas::fuzz::writeFile("config.json", R"({"model_type": "mixtral"})");
        moeatlas::fuzz::writeFile("model-00001-of-00002.safetensors", shard("a.weight"));
        moeatlas::fuzz::writeFile("model-00002-of-00002.safetensors", shard("b.weight"));
        return moeatlas::fuzz::scratchDir();
    }();
    return dir;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    const auto& dir = checkpointDir();
    moeatlas::fuzz::writeFile("model.safetensors.index.json", moeatlas::fuzz::asText(data, size));
    try {
        const moeatlas::Checkpoint checkpoint(dir);
        for (const std::string& name : checkpoint.names()) {
            if (checkpoint.bytes(name).size() != checkpoint.info(name).byteSize())
                std::abort();
            (void)checkpoint.fileOf(name).path();
        }
        (void)checkpoint.shardPaths();
        (void)checkpoint.totalBytes();
    } catch (const moeatlas::InputError&) {
    }
    return 0;
}
