// Damaging an atlas on purpose: flip one byte inside the stored bytes of a dataset's chunk, found
// with H5Dget_chunk_info, so the change lands in data HDF5 checksums (not in metadata or padding).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace moeatlas::test {

struct StoredChunk {
    haddr_t address = 0; // file offset of the chunk's stored (filtered) bytes
    hsize_t size = 0;
};

// Chunk `index` of dataset `dataset` (an HDF5 path) in `file`; nullopt when it has no such chunk.
inline std::optional<StoredChunk> storedChunk(
    const std::filesystem::path& file, const std::string& dataset, hsize_t index = 0)
{
    std::optional<StoredChunk> result;
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return result;
    const hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
    if (d >= 0) {
        hsize_t offset[8] = {};
        unsigned filterMask = 0;
        StoredChunk c;
        const hid_t space = H5Dget_space(d);
        if (H5Dget_chunk_info(d, space, index, offset, &filterMask, &c.address, &c.size) >= 0 && c.size > 0)
            result = c;
        H5Sclose(space);
        H5Dclose(d);
    }
    H5Fclose(f);
    return result;
}

// XORs the byte in the middle of that chunk with `mask`; false when the chunk cannot be found.
inline bool flipChunkByte(
    const std::filesystem::path& file, const std::string& dataset, hsize_t index = 0, unsigned char mask = 0x10)
{
    const std::optional<StoredChunk> c = storedChunk(file, dataset, index);
    if (!c)
        return false;
    std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(c->address + c->size / 2);
    io.seekg(at);
    char byte = 0;
    io.read(&byte, 1);
    byte = static_cast<char>(static_cast<unsigned char>(byte) ^ mask);
    io.seekp(at);
    io.write(&byte, 1);
    return static_cast<bool>(io);
}

// True when dataset `dataset` of `file` has the Fletcher-32 filter in its pipeline.
inline bool hasFletcher32(hid_t dataset)
{
    const hid_t dcpl = H5Dget_create_plist(dataset);
    bool found = false;
    const int n = H5Pget_nfilters(dcpl);
    for (int i = 0; i < n; ++i) {
        unsigned flags = 0;
        size_t cdNelmts = 0;
        unsigned filterConfig = 0;
        if (H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &cdNelmts, nullptr, 0, nullptr, &filterConfig)
            == H5Z_FILTER_FLETCHER32)
            found = true;
    }
    H5Pclose(dcpl);
    return found;
}

} // namespace moeatlas::test
