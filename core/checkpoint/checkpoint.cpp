#include "checkpoint/checkpoint.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

constexpr const char* kConfigName = "config.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kIndexName = "model.safetensors.index.json";

nlohmann::json readJson(const fs::path& path, const char* what)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw InputError(path.string() + ": cannot open " + what);
    std::stringstream buffer;
    buffer << in.rdbuf();
    try {
        return nlohmann::json::parse(buffer.str());
    } catch (const nlohmann::json::exception& e) {
        throw InputError(path.string() + ": " + what + " is not valid JSON (" + e.what() + ")");
    }
}

// Shard names come from a file we do not control; keep them inside the checkpoint directory.
bool isSafeRelativeName(const std::string& name)
{
    const fs::path p(name);
    if (name.empty() || p.is_absolute())
        return false;
    for (const fs::path& part : p)
        if (part == "..")
            return false;
    return true;
}

} // namespace

// bugprone-exception-escape is a false positive here: the implicit noexcept default constructor runs
// nlohmann::json's noexcept one, whose delegate holds a throw that a null json never reaches.
struct Checkpoint::Impl { // NOLINT(bugprone-exception-escape)
    nlohmann::json config;
    std::vector<SafetensorsFile> files; // in shardPaths() order
    std::map<std::string, std::size_t> fileOfName; // tensor -> index into files
};

Checkpoint::Checkpoint(const fs::path& dir)
    : m_dir(dir)
    , m_impl(std::make_unique<Impl>())
{
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw InputError(dir.string() + ": checkpoint directory does not exist or is not a directory");

    const fs::path configPath = dir / kConfigName;
    if (!fs::is_regular_file(configPath, ec))
        throw InputError(dir.string() + ": missing config.json (a Hugging Face checkpoint needs it)");
    m_impl->config = readJson(configPath, "config.json");
    if (!m_impl->config.is_object())
        throw InputError(configPath.string() + ": expected a JSON object, got a JSON " + m_impl->config.type_name());

    // Same precedence as transformers: a single model.safetensors wins over an index.
    const fs::path singlePath = dir / kSingleName;
    const fs::path indexPath = dir / kIndexName;
    if (fs::is_regular_file(singlePath, ec)) {
        m_impl->files.emplace_back(singlePath);
        for (const std::string& name : m_impl->files.front().names())
            m_impl->fileOfName.emplace(name, 0);
        return;
    }
    if (!fs::is_regular_file(indexPath, ec))
        throw InputError(dir.string() + ": neither " + kSingleName + " nor " + kIndexName + " found");

    const nlohmann::json index = readJson(indexPath, "the shard index");
    if (!index.is_object())
        throw InputError(indexPath.string() + ": expected a JSON object {\"metadata\", \"weight_map\"}, got a JSON "
            + index.type_name());
    const auto mapIt = index.find("weight_map");
    if (mapIt == index.end() || !mapIt->is_object())
        throw InputError(indexPath.string() + ": missing \"weight_map\" object (tensor name -> shard file)");
    if (mapIt->empty())
        throw InputError(indexPath.string() + ": \"weight_map\" lists no tensors");
    if (const auto metaIt = index.find("metadata"); metaIt != index.end() && !metaIt->is_object() && !metaIt->is_null())
        throw InputError(
            indexPath.string() + ": \"metadata\" is a JSON " + metaIt->type_name() + "; expected an object");

    std::map<std::string, std::string> shardOf; // tensor -> shard file name
    std::map<std::string, std::string> firstTensorOf; // shard -> a tensor naming it, for messages
    for (const auto& [tensor, shard] : mapIt->items()) {
        if (!shard.is_string())
            throw InputError(indexPath.string() + ": weight_map entry for tensor '" + tensor + "' is " + shard.dump()
                + "; expected a shard file name");
        const std::string shardName = shard.get<std::string>();
        if (!isSafeRelativeName(shardName))
            throw InputError(indexPath.string() + ": weight_map entry for tensor '" + tensor + "' names shard '"
                + shardName + "', which is not inside the checkpoint directory");
        shardOf.emplace(tensor, shardName);
        firstTensorOf.emplace(shardName, tensor);
    }

    // Shards sorted by name, which is numeric order for transformers' model-0000i-of-0000N names.
    std::map<std::string, std::size_t> shardIndex;
    for (const auto& [shardName, tensor] : firstTensorOf) {
        const fs::path shardPath = dir / shardName;
        if (!fs::is_regular_file(shardPath, ec))
            throw InputError(indexPath.string() + ": shard '" + shardName + "' (holding tensor '" + tensor
                + "') does not exist in " + dir.string());
        shardIndex.emplace(shardName, m_impl->files.size());
        m_impl->files.emplace_back(shardPath);
    }
    for (const auto& [tensor, shardName] : shardOf) {
        const std::size_t i = shardIndex.at(shardName);
        if (!m_impl->files[i].contains(tensor))
            throw InputError(indexPath.string() + ": tensor '" + tensor + "' is listed in shard '" + shardName
                + "', but " + m_impl->files[i].path().string() + " has no such tensor");
        m_impl->fileOfName.emplace(tensor, i);
    }
}

Checkpoint::~Checkpoint() = default;
Checkpoint::Checkpoint(Checkpoint&&) noexcept = default;
Checkpoint& Checkpoint::operator=(Checkpoint&&) noexcept = default;

const nlohmann::json& Checkpoint::config() const
{
    return m_impl->config;
}

bool Checkpoint::contains(const std::string& name) const
{
    return m_impl->fileOfName.count(name) != 0;
}

const SafetensorsFile& Checkpoint::fileOf(const std::string& name) const
{
    const auto it = m_impl->fileOfName.find(name);
    if (it == m_impl->fileOfName.end())
        throw InputError(m_dir.string() + ": missing tensor '" + name + "'");
    return m_impl->files[it->second];
}

const TensorInfo& Checkpoint::info(const std::string& name) const
{
    return fileOf(name).info(name);
}

std::span<const std::byte> Checkpoint::bytes(const std::string& name) const
{
    return fileOf(name).bytes(name);
}

void Checkpoint::release(const std::string& name) const
{
    fileOf(name).release(name);
}

std::vector<std::string> Checkpoint::names() const
{
    std::vector<std::string> out;
    out.reserve(m_impl->fileOfName.size());
    for (const auto& [name, file] : m_impl->fileOfName)
        out.push_back(name);
    return out;
}

std::vector<fs::path> Checkpoint::shardPaths() const
{
    std::vector<fs::path> out;
    out.reserve(m_impl->files.size());
    for (const SafetensorsFile& f : m_impl->files)
        out.push_back(f.path());
    return out;
}

uint64_t Checkpoint::totalBytes() const
{
    uint64_t total = 0;
    for (const auto& [name, file] : m_impl->fileOfName)
        total += m_impl->files[file].info(name).byteSize();
    return total;
}

} // namespace moeatlas
