// Writes a Hugging Face checkpoint directory: tensors streamed into shards of at most
// `maxShardBytes` (model-00001-of-0000N.safetensors + model.safetensors.index.json, or a single
// model.safetensors when everything fits), config.json and any extra files. Everything goes to
// "<dir>.partial" first; finish() renames it to <dir>. A writer destroyed before finish() removes
// the partial directory.
#pragma once

#include "checkpoint/dtype.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

struct CheckpointWriterOptions {
    uint64_t maxShardBytes = 5ull << 30; // transformers' default is 5 GB shards
    bool overwrite = false; // refuse a non-empty existing directory unless true
};

class CheckpointWriter {
public:
    // Throws InputError when `dir` exists and is non-empty (and !overwrite) or its parent is not writable.
    CheckpointWriter(std::filesystem::path dir, CheckpointWriterOptions options = {});
    ~CheckpointWriter();

    // Declares every tensor, in the order they will be written.
    void declare(const std::string& name, DType dtype, std::vector<int64_t> shape);
    // Writes the next declared tensor (whole). Shards are assigned at the first write.
    void write(const std::string& name, std::span<const std::byte> bytes);
    // Appends part of the next declared tensor; call repeatedly until its declared bytes are
    // all written, so a tensor assembled from pieces (rows sliced out of a mapping) needs no
    // staging buffer. Throws Error on a wrong name or more bytes than declared.
    void writeChunk(const std::string& name, std::span<const std::byte> bytes);
    // Extra file in the output (config.json, tokenizer.json, README.md ...), written at finish().
    void addFile(const std::string& relativeName, std::string contents);
    void copyFile(const std::filesystem::path& source, const std::string& relativeName);
    // The model card (README.md), written last at finish() with the SHA-256 manifest of every other
    // file appended (checkpoint_manifest.h).
    void setCard(const std::string& relativeName, std::string contents);
    void setConfig(const nlohmann::json& config);
    // Writes the index (when sharded) and the extra files, renames the directory into place.
    void finish();

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

} // namespace moeatlas
