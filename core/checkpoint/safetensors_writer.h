// Streaming writer of one .safetensors file. Tensors are declared first (so the header can be
// written), then their bytes are appended in declaration order. The file is written under a
// temporary name and renamed by finish(); a writer destroyed before finish() removes it.
#pragma once

#include "checkpoint/dtype.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

class SafetensorsWriter {
public:
    explicit SafetensorsWriter(std::filesystem::path finalPath);
    ~SafetensorsWriter();
    SafetensorsWriter(const SafetensorsWriter&) = delete;
    SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

    void setMetadata(std::map<std::string, std::string> metadata);
    // Declares a tensor; all declarations come before the first write().
    void declare(const std::string& name, DType dtype, std::vector<int64_t> shape);
    // Appends the bytes of the next declared tensor (may be called several times per tensor,
    // chunk by chunk). Throws Error when more bytes than declared arrive or names are out of order.
    void write(const std::string& name, std::span<const std::byte> bytes);
    // Checks every declared byte was written, flushes, renames to the final path.
    void finish();
    // Total bytes of the file once finished (header included); valid after all declare()s.
    uint64_t fileSize() const;

private:
    void writeHeader();

    std::filesystem::path m_final;
    std::filesystem::path m_tmp;
    struct Entry {
        std::string name;
        DType dtype;
        std::vector<int64_t> shape;
        uint64_t bytes;
    };
    std::vector<Entry> m_entries;
    std::map<std::string, std::string> m_metadata;
    std::size_t m_current = 0;
    uint64_t m_writtenInCurrent = 0;
    int m_fd = -1;
    bool m_headerWritten = false;
    bool m_finished = false;
};

} // namespace moeatlas
