#include "checkpoint/safetensors_writer.h"

#include "util/atomic_file.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <bit>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

// The reference writer pads the header with spaces so the data region starts 8-byte aligned,
// which lets readers map F64/I64 tensors without copying.
constexpr std::size_t kHeaderAlign = 8;

void writeAll(int fd, const fs::path& path, const void* data, std::size_t size)
{
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, p, size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw Error(path.string() + ": write failed (" + std::strerror(errno) + ")");
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
}

} // namespace

SafetensorsWriter::SafetensorsWriter(fs::path finalPath)
    : m_final(std::move(finalPath))
    , m_tmp(partialPathFor(m_final))
{
    ensureWritableDirectory(m_final);
}

SafetensorsWriter::~SafetensorsWriter()
{
    if (m_fd >= 0)
        ::close(m_fd);
    if (!m_finished && m_headerWritten) {
        std::error_code ec;
        fs::remove(m_tmp, ec);
    }
}

void SafetensorsWriter::setMetadata(std::map<std::string, std::string> metadata)
{
    if (m_headerWritten)
        throw Error(m_final.string() + ": metadata set after the first write");
    m_metadata = std::move(metadata);
}

void SafetensorsWriter::declare(const std::string& name, DType dtype, std::vector<int64_t> shape)
{
    if (m_headerWritten)
        throw Error(m_final.string() + ": tensor '" + name + "' declared after the first write");
    if (name == "__metadata__")
        throw InputError(m_final.string() + ": '__metadata__' is reserved and cannot name a tensor");
    for (const Entry& e : m_entries)
        if (e.name == name)
            throw InputError(m_final.string() + ": tensor '" + name + "' declared twice");
    uint64_t bytes = dtypeSize(dtype);
    for (int64_t d : shape) {
        if (d < 0)
            throw InputError(
                m_final.string() + ": tensor '" + name + "': negative shape dimension " + std::to_string(d));
        if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes))
            throw InputError(m_final.string() + ": tensor '" + name + "': byte size overflows 64 bits");
    }
    m_entries.push_back({ name, dtype, std::move(shape), bytes });
}

namespace {

// The header exactly as the reference writer lays it out: compact JSON, "__metadata__" first,
// then the tensors (here in declaration order, which is also the data order), padded with spaces.
std::string buildHeader(const std::map<std::string, std::string>& metadata, const auto& entries, const fs::path& path)
{
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
        nlohmann::ordered_json meta = nlohmann::ordered_json::object();
        for (const auto& [k, v] : metadata)
            meta[k] = v;
        header["__metadata__"] = std::move(meta);
    }
    uint64_t offset = 0;
    for (const auto& e : entries) {
        nlohmann::ordered_json t = nlohmann::ordered_json::object();
        t["dtype"] = std::string(dtypeName(e.dtype));
        t["shape"] = e.shape;
        t["data_offsets"] = { offset, offset + e.bytes };
        header[e.name] = std::move(t);
        offset += e.bytes;
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const nlohmann::json::exception& e) {
        // Names that are not valid UTF-8 cannot go into a JSON header.
        throw InputError(path.string() + ": cannot encode header (" + e.what() + ")");
    }
    text.append((kHeaderAlign - text.size() % kHeaderAlign) % kHeaderAlign, ' ');
    return text;
}

} // namespace

uint64_t SafetensorsWriter::fileSize() const
{
    uint64_t total = 8 + buildHeader(m_metadata, m_entries, m_final).size();
    for (const Entry& e : m_entries)
        total += e.bytes;
    return total;
}

void SafetensorsWriter::writeHeader()
{
    const std::string header = buildHeader(m_metadata, m_entries, m_final);
    m_fd = ::open(m_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (m_fd < 0)
        throw Error(m_tmp.string() + ": cannot create (" + std::strerror(errno) + ")");
    m_headerWritten = true; // from here on the destructor owns removing the temp file
    uint64_t len = header.size();
    if constexpr (std::endian::native == std::endian::big)
        len = __builtin_bswap64(len);
    writeAll(m_fd, m_tmp, &len, sizeof len);
    writeAll(m_fd, m_tmp, header.data(), header.size());
}

void SafetensorsWriter::write(const std::string& name, std::span<const std::byte> bytes)
{
    if (m_finished)
        throw Error(m_final.string() + ": write of '" + name + "' after finish()");
    if (!m_headerWritten)
        writeHeader();
    // Move past tensors that are complete (including empty ones the caller never wrote).
    while (m_current < m_entries.size() && m_entries[m_current].name != name
        && m_writtenInCurrent == m_entries[m_current].bytes) {
        ++m_current;
        m_writtenInCurrent = 0;
    }
    if (m_current >= m_entries.size())
        throw Error(m_final.string() + ": write of tensor '" + name
            + "', which is not declared or comes after the last declared tensor");
    Entry& e = m_entries[m_current];
    if (e.name != name)
        throw Error(m_final.string() + ": write of tensor '" + name + "' out of order; expected '" + e.name + "' ("
            + std::to_string(e.bytes - m_writtenInCurrent) + " bytes left)");
    if (bytes.size() > e.bytes - m_writtenInCurrent)
        throw Error(m_final.string() + ": tensor '" + name + "': " + std::to_string(bytes.size())
            + " bytes written but only " + std::to_string(e.bytes - m_writtenInCurrent) + " of the declared "
            + std::to_string(e.bytes) + " remain");
    writeAll(m_fd, m_tmp, bytes.data(), bytes.size());
    m_writtenInCurrent += bytes.size();
}

void SafetensorsWriter::finish()
{
    if (m_finished)
        throw Error(m_final.string() + ": finish() called twice");
    if (!m_headerWritten)
        writeHeader();
    for (std::size_t i = m_current; i < m_entries.size(); ++i) {
        const uint64_t written = i == m_current ? m_writtenInCurrent : 0;
        if (written != m_entries[i].bytes)
            throw Error(m_final.string() + ": tensor '" + m_entries[i].name + "': " + std::to_string(written) + " of "
                + std::to_string(m_entries[i].bytes) + " declared bytes written");
    }
    // No fsync: like the rest of the project's outputs, atomicity against concurrent readers is
    // what matters; durability across a power cut is not worth flushing multi-GB shards.
    const int fd = std::exchange(m_fd, -1);
    if (::close(fd) != 0)
        throw Error(m_tmp.string() + ": close failed (" + std::strerror(errno) + ")");
    commitFile(m_tmp, m_final);
    m_finished = true;
}

} // namespace moeatlas
