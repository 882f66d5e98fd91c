#include "checkpoint/safetensors.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

// The reference implementation refuses headers above 100 MB; a larger one is corrupt or hostile,
// and parsing it would cost more memory than any real checkpoint header needs.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

[[noreturn]] void fail(const fs::path& path, const std::string& what)
{
    throw InputError(path.string() + ": " + what);
}

[[noreturn]] void failTensor(const fs::path& path, const std::string& name, const std::string& what)
{
    fail(path, "tensor '" + name + "': " + what);
}

std::string shapeString(const std::vector<int64_t>& shape)
{
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
        s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

std::string rangeString(uint64_t begin, uint64_t end)
{
    return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

std::string knownDTypes()
{
    std::string s;
    for (DType t : { DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2, DType::I64,
             DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL })
        s += (s.empty() ? "" : ", ") + std::string(dtypeName(t));
    return s;
}

// Unmaps on scope exit unless released, so a constructor that throws does not leak the mapping
// (the destructor of a half-constructed object never runs).
struct MappingGuard {
    const std::byte* map = nullptr;
    std::size_t size = 0;
    ~MappingGuard()
    {
        if (map)
            ::munmap(const_cast<std::byte*>(map), size);
    }
};

TensorInfo parseTensor(const fs::path& path, const std::string& name, const nlohmann::json& entry, uint64_t dataSize)
{
    if (!entry.is_object())
        failTensor(path, name, "expected an object {dtype, shape, data_offsets}, got " + entry.dump());

    TensorInfo info;
    info.name = name;

    const auto dtypeIt = entry.find("dtype");
    if (dtypeIt == entry.end() || !dtypeIt->is_string())
        failTensor(path, name, "missing or non-string field 'dtype'");
    const std::string dtypeText = dtypeIt->get<std::string>();
    const std::optional<DType> dtype = parseDType(dtypeText);
    if (!dtype)
        failTensor(path, name, "unknown dtype '" + dtypeText + "' (expected one of " + knownDTypes() + ")");
    info.dtype = *dtype;

    const auto shapeIt = entry.find("shape");
    if (shapeIt == entry.end() || !shapeIt->is_array())
        failTensor(path, name, "missing field 'shape' (expected an array of non-negative integers)");
    // Element count in uint64 with overflow checks: a crafted shape must not wrap around to a
    // product that happens to match the byte range.
    uint64_t numel = 1;
    bool overflow = false;
    for (std::size_t i = 0; i < shapeIt->size(); ++i) {
        const nlohmann::json& d = (*shapeIt)[i];
        int64_t dim = 0;
        if (d.is_number_unsigned()) {
            const uint64_t u = d.get<uint64_t>();
            if (u > static_cast<uint64_t>(INT64_MAX))
                failTensor(path, name, "shape dimension " + std::to_string(i) + " is " + d.dump() + ", too large");
            dim = static_cast<int64_t>(u);
        } else if (d.is_number_integer()) {
            dim = d.get<int64_t>();
            if (dim < 0)
                failTensor(path, name,
                    "shape dimension " + std::to_string(i) + " is " + std::to_string(dim)
                        + "; expected a non-negative integer");
        } else {
            failTensor(path, name,
                "shape dimension " + std::to_string(i) + " is " + d.dump() + "; expected a non-negative integer");
        }
        info.shape.push_back(dim);
        overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(dim), &numel);
    }

    const auto offIt = entry.find("data_offsets");
    const bool offsetsOk = offIt != entry.end() && offIt->is_array() && offIt->size() == 2
        && (*offIt)[0].is_number_unsigned() && (*offIt)[1].is_number_unsigned();
    if (!offsetsOk)
        failTensor(path, name,
            "data_offsets is " + (offIt == entry.end() ? std::string("missing") : offIt->dump())
                + "; expected [begin, end] with non-negative integers");
    info.begin = (*offIt)[0].get<uint64_t>();
    info.end = (*offIt)[1].get<uint64_t>();
    if (info.begin > info.end)
        failTensor(path, name,
            "data_offsets " + rangeString(info.begin, info.end)
                + " have begin > end; expected [begin, end] with begin <= end");
    if (info.end > dataSize)
        failTensor(path, name,
            "data_offsets " + rangeString(info.begin, info.end) + " lie outside the data region of "
                + std::to_string(dataSize) + " bytes");

    uint64_t needed = 0;
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(dtypeSize(info.dtype)), &needed);
    if (overflow)
        failTensor(
            path, name, "shape " + shapeString(info.shape) + " x " + dtypeText + " overflows a 64-bit byte count");
    if (needed != info.byteSize())
        failTensor(path, name,
            "data_offsets " + rangeString(info.begin, info.end) + " hold " + std::to_string(info.byteSize())
                + " bytes but shape " + shapeString(info.shape) + " x " + dtypeText + " needs "
                + std::to_string(needed));
    return info;
}

} // namespace

int64_t TensorInfo::numel() const
{
    int64_t n = 1;
    for (int64_t d : shape)
        n *= d;
    return n;
}

SafetensorsFile::SafetensorsFile(const fs::path& path)
    : m_path(path)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail(path, std::string("cannot open safetensors file (") + std::strerror(errno) + ")");
    struct stat st { };
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        fail(path, std::string("cannot stat (") + std::strerror(err) + ")");
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail(path, "not a regular file");
    }
    const auto fileSize = static_cast<uint64_t>(st.st_size);
    if (fileSize < 8) {
        ::close(fd);
        fail(path,
            "file is " + std::to_string(fileSize)
                + " bytes; a safetensors file needs at least the 8-byte header length");
    }

    // MAP_PRIVATE + PROT_READ: pages are never dirtied, so madvise(DONTNEED) in release() simply
    // drops them and a later access re-reads them from the file.
    void* map = ::mmap(nullptr, fileSize, PROT_READ, MAP_PRIVATE, fd, 0);
    const int mapErr = errno;
    ::close(fd); // the mapping keeps its own reference to the file
    if (map == MAP_FAILED)
        fail(path, std::string("cannot mmap (") + std::strerror(mapErr) + ")");
    MappingGuard guard { static_cast<const std::byte*>(map), static_cast<std::size_t>(fileSize) };

    uint64_t headerLen = 0;
    std::memcpy(&headerLen, guard.map, sizeof headerLen);
    if constexpr (std::endian::native == std::endian::big)
        headerLen = __builtin_bswap64(headerLen);
    if (headerLen > kMaxHeaderBytes)
        fail(path,
            "header length " + std::to_string(headerLen) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes)
                + " bytes");
    if (headerLen > fileSize - 8)
        fail(path,
            "header length " + std::to_string(headerLen) + " exceeds the file: only " + std::to_string(fileSize - 8)
                + " bytes follow the 8-byte length");

    const char* headerBegin = reinterpret_cast<const char*>(guard.map + 8);
    nlohmann::json header;
    try {
        header = nlohmann::json::parse(headerBegin, headerBegin + headerLen);
    } catch (const nlohmann::json::exception& e) {
        fail(path, std::string("header is not valid JSON (") + e.what() + ")");
    }
    if (!header.is_object())
        fail(path,
            "header is a JSON " + std::string(header.type_name())
                + "; expected an object {tensor name: {dtype, shape, data_offsets}}");

    const uint64_t dataStart = 8 + headerLen;
    const uint64_t dataSize = fileSize - dataStart;
    for (const auto& [key, value] : header.items()) {
        if (key == "__metadata__") {
            if (!value.is_object())
                fail(path,
                    "__metadata__ is a JSON " + std::string(value.type_name()) + "; expected an object of strings");
            for (const auto& [mk, mv] : value.items()) {
                if (!mv.is_string())
                    fail(path, "__metadata__ entry '" + mk + "' is " + mv.dump() + "; expected a string");
                m_metadata.emplace(mk, mv.get<std::string>());
            }
            continue;
        }
        m_tensors.emplace(key, parseTensor(path, key, value, dataSize));
    }

    // Overlap check on the tensors sorted by start; empty tensors occupy no bytes and so can sit
    // anywhere (the reference writer places them at the same offset as their neighbour).
    std::vector<const TensorInfo*> byOffset;
    for (const auto& [name, info] : m_tensors)
        if (info.byteSize() > 0)
            byOffset.push_back(&info);
    std::sort(
        byOffset.begin(), byOffset.end(), [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < byOffset.size(); ++i) {
        const TensorInfo& prev = *byOffset[i - 1];
        const TensorInfo& cur = *byOffset[i];
        if (cur.begin < prev.end)
            fail(path,
                "tensor '" + cur.name + "': data_offsets " + rangeString(cur.begin, cur.end) + " overlap tensor '"
                    + prev.name + "' " + rangeString(prev.begin, prev.end));
    }

    m_map = guard.map;
    m_mapSize = guard.size;
    m_dataStart = static_cast<std::size_t>(dataStart);
    guard.map = nullptr;
}

SafetensorsFile::~SafetensorsFile()
{
    if (m_map)
        ::munmap(const_cast<std::byte*>(m_map), m_mapSize);
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : m_path(std::move(other.m_path))
    , m_tensors(std::move(other.m_tensors))
    , m_metadata(std::move(other.m_metadata))
    , m_map(std::exchange(other.m_map, nullptr))
    , m_mapSize(std::exchange(other.m_mapSize, 0))
    , m_dataStart(std::exchange(other.m_dataStart, 0))
{
}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept
{
    if (this != &other) {
        if (m_map)
            ::munmap(const_cast<std::byte*>(m_map), m_mapSize);
        m_path = std::move(other.m_path);
        m_tensors = std::move(other.m_tensors);
        m_metadata = std::move(other.m_metadata);
        m_map = std::exchange(other.m_map, nullptr);
        m_mapSize = std::exchange(other.m_mapSize, 0);
        m_dataStart = std::exchange(other.m_dataStart, 0);
    }
    return *this;
}

bool SafetensorsFile::contains(const std::string& name) const
{
    return m_tensors.count(name) != 0;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const
{
    const auto it = m_tensors.find(name);
    if (it == m_tensors.end())
        fail(m_path, "no tensor '" + name + "'");
    return it->second;
}

std::vector<std::string> SafetensorsFile::names() const
{
    std::vector<std::string> out;
    out.reserve(m_tensors.size());
    for (const auto& [name, info] : m_tensors)
        out.push_back(name);
    return out;
}

std::span<const std::byte> SafetensorsFile::bytes(const std::string& name) const
{
    const TensorInfo& t = info(name);
    return { m_map + m_dataStart + t.begin, static_cast<std::size_t>(t.byteSize()) };
}

void SafetensorsFile::release(const std::string& name) const
{
    const TensorInfo& t = info(name);
    if (t.byteSize() == 0 || !m_map)
        return;
    // Whole enclosing pages: the mapping is read-only and private, so dropping a page shared with
    // a neighbouring tensor only costs that neighbour a re-read from the page cache on next access.
    const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t begin = (m_dataStart + t.begin) / page * page;
    const uint64_t end = std::min<uint64_t>((m_dataStart + t.end + page - 1) / page * page, m_mapSize);
    // Advice only: a failure leaves the pages resident, which is harmless.
    (void)::madvise(const_cast<std::byte*>(m_map + begin), end - begin, MADV_DONTNEED);
}

} // namespace moeatlas
