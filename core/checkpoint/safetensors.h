// Memory-mapped, fully validated reader of one .safetensors file.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
// optional "__metadata__" (string -> string), then the data region.
#pragma once

#include "checkpoint/dtype.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0; // byte offsets relative to the start of the data region
    uint64_t end = 0;
    int64_t numel() const;
    uint64_t byteSize() const { return end - begin; }
};

// Opens and validates the whole header on construction; throws InputError naming the file and
// the offending tensor/field when: the file is shorter than 8 bytes, the header length exceeds
// the file (or a sane bound of 100 MB), the JSON is malformed or not an object, a dtype is
// unknown, a shape has negative dims, data_offsets are not [begin, end] with begin <= end, an
// offset range lies outside the data region, two tensors overlap, or shape x dtype size differs
// from end - begin. Tensors are exposed as read-only byte spans into the mapping.
class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::filesystem::path& path);
    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;
    SafetensorsFile(SafetensorsFile&& other) noexcept;
    SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;

    const std::filesystem::path& path() const { return m_path; }
    bool contains(const std::string& name) const;
    // Throws InputError "<file>: no tensor '<name>'" when absent.
    const TensorInfo& info(const std::string& name) const;
    std::vector<std::string> names() const; // sorted
    const std::map<std::string, std::string>& metadata() const { return m_metadata; }

    // The tensor's bytes, mapped read-only (little-endian, row-major).
    std::span<const std::byte> bytes(const std::string& name) const;
    // Tells the kernel the pages of this tensor are no longer needed (madvise DONTNEED), so
    // streaming execution keeps resident memory at about one layer. The span stays valid.
    void release(const std::string& name) const;

private:
    std::filesystem::path m_path;
    std::map<std::string, TensorInfo> m_tensors;
    std::map<std::string, std::string> m_metadata;
    const std::byte* m_map = nullptr;
    std::size_t m_mapSize = 0;
    std::size_t m_dataStart = 0;
};

} // namespace moeatlas
