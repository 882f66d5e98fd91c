// A Hugging Face checkpoint directory: config.json plus either model.safetensors or shards
// listed by model.safetensors.index.json ({"metadata": {...}, "weight_map": {name: shard}}).
#pragma once

#include "checkpoint/safetensors.h"

#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace moeatlas {

class Checkpoint {
public:
    // Throws InputError naming the directory/file when: the directory or config.json is missing,
    // config.json is not valid JSON, neither model.safetensors nor the index exists, the index is
    // malformed, a shard it names is missing, or a tensor listed in the index is absent from its shard.
    explicit Checkpoint(const std::filesystem::path& dir);
    ~Checkpoint();
    Checkpoint(Checkpoint&&) noexcept;
    Checkpoint& operator=(Checkpoint&&) noexcept;

    const std::filesystem::path& dir() const { return m_dir; }
    const nlohmann::json& config() const; // parsed config.json

    bool contains(const std::string& name) const;
    // Throws InputError "<dir>: missing tensor '<name>'" when absent.
    const TensorInfo& info(const std::string& name) const;
    const SafetensorsFile& fileOf(const std::string& name) const;
    std::span<const std::byte> bytes(const std::string& name) const;
    void release(const std::string& name) const;
    std::vector<std::string> names() const; // sorted
    std::vector<std::filesystem::path> shardPaths() const; // in index order
    uint64_t totalBytes() const; // sum of tensor bytes

private:
    struct Impl;
    std::filesystem::path m_dir;
    std::unique_ptr<Impl> m_impl;
};

} // namespace moeatlas
