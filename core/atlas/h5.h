// A thin RAII layer over the HDF5 C API, private to core/atlas. Handles close in their
// destructors; helpers throw moeatlas errors naming the file and the HDF5 object path, with the
// innermost message of HDF5's error stack appended (automatic error printing is turned off).
// Convention: failures while opening or reading an object throw InputError (the file is not
// what we expect), failures while creating or writing throw Error.
// HDF5 here is the serial, non-thread-safe build: callers hold libraryMutex() around any use.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace moeatlas::h5 {

// Serialises every HDF5 call in the process (the library keeps global state).
std::recursive_mutex& libraryMutex();

// Turns off HDF5's automatic printing of its error stack to stderr (idempotent).
void silenceErrorPrinting();

// An owned HDF5 identifier of one kind, closed with `Close` when the handle dies.
template <herr_t (*Close)(hid_t)> class Handle {
public:
    Handle() = default;
    explicit Handle(hid_t id)
        : m_id(id)
    {
    }
    ~Handle() { reset(); }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    Handle(Handle&& other) noexcept
        : m_id(std::exchange(other.m_id, H5I_INVALID_HID))
    {
    }
    Handle& operator=(Handle&& other) noexcept
    {
        if (this != &other) {
            reset();
            m_id = std::exchange(other.m_id, H5I_INVALID_HID);
        }
        return *this;
    }

    hid_t id() const { return m_id; }
    bool valid() const { return m_id >= 0; }
    explicit operator bool() const { return valid(); }
    // Closes now; returns false when HDF5 reports an error (e.g. a failed final flush).
    bool close()
    {
        if (m_id < 0)
            return true;
        const herr_t status = Close(std::exchange(m_id, H5I_INVALID_HID));
        return status >= 0;
    }
    void reset() { close(); }

private:
    hid_t m_id = H5I_INVALID_HID;
};

using File = Handle<H5Fclose>;
using Group = Handle<H5Gclose>;
using Dataset = Handle<H5Dclose>;
using Dataspace = Handle<H5Sclose>;
using Datatype = Handle<H5Tclose>;
using Attribute = Handle<H5Aclose>;
using PropList = Handle<H5Pclose>;

// ---- names and errors ----------------------------------------------------------------------

// Path of the file that `id` belongs to, and the HDF5 path of the object (e.g. "/layers/3").
std::string fileName(hid_t id);
std::string objectPath(hid_t id);
// objectPath(location) joined with a relative child name.
std::string childPath(hid_t location, const std::string& name);
// Innermost description on HDF5's error stack ("" when empty); clears the stack.
std::string takeErrorDetail();
// Throws Error / InputError "<file>: <object>: <what> (HDF5: <detail>)".
[[noreturn]] void failWrite(hid_t location, const std::string& object, const std::string& what);
[[noreturn]] void failRead(hid_t location, const std::string& object, const std::string& what);

// ---- files and groups ----------------------------------------------------------------------

File createFile(const std::filesystem::path& path); // truncates an existing file
File openFile(const std::filesystem::path& path, bool writable); // InputError when it is no HDF5
void flushFile(hid_t file, bool syncToDisk); // H5Fflush, then fsync(2)

Group createGroup(hid_t location, const std::string& name);
Group openGroup(hid_t location, const std::string& name);
// True when `name` (one path component, no '/') is a link under `location`.
bool exists(hid_t location, const std::string& name);
void unlink(hid_t location, const std::string& name);

// ---- copying between files (updates: docs/atlas-format.md, "Updates") ----------------------

// Names of the links directly under `group`, in name order.
std::vector<std::string> linkNames(hid_t group);
// True when `name` under `location` is a group (following soft links).
bool isGroup(hid_t location, const std::string& name);
// Copies the link `name` under `from` to the same name under `to`, in another file too. Objects
// go through H5Ocopy, whole: attributes, chunking, filters and fill values as they are, chunks
// copied as stored (not recompressed). Soft and external links are recreated as links.
void copyLink(hid_t from, const std::string& name, hid_t to);
// Copies the attributes of object `from` that object `to` does not have (same type and shape).
void copyMissingAttributes(hid_t from, hid_t to);

// ---- types ---------------------------------------------------------------------------------

// IEEE binary16 little-endian, built from F32LE because HDF5 1.10 predefines no half type.
Datatype halfType();
// Variable-length UTF-8 string: h5py reads such attributes as str.
Datatype stringType();
// True when `type` is a 2-byte IEEE float (the half type above, or h5py's float16).
bool isHalfType(hid_t type);

// ---- datasets ------------------------------------------------------------------------------

// Every dataset createDataset makes is chunked and carries HDF5's Fletcher-32 checksum, after any
// compression, except variable-length strings (HDF5 refuses the filter for them); a read whose
// checksum fails throws InputError naming the file and the dataset.
struct Layout {
    std::vector<hsize_t> chunk; // empty: whole rows of dimension 0, up to 1 MiB a chunk
    int gzipLevel = 0; // 0: no compression; only with chunk
    bool shuffle = false; // only with gzip
};

Dataset createDataset(hid_t location, const std::string& name, hid_t fileType, const std::vector<hsize_t>& dims,
    const Layout& layout = {});
// chunkCacheBytes > 0 sets the raw-data chunk cache of this dataset (w0 = 1: evict fully
// written chunks first), so blocks smaller than a chunk do not recompress it on every write.
Dataset openDataset(hid_t location, const std::string& name, size_t chunkCacheBytes = 0);
std::vector<hsize_t> shape(hid_t dataset);
Datatype datasetType(hid_t dataset);

void writeAll(hid_t dataset, hid_t memType, const void* data);
void readAll(hid_t dataset, hid_t memType, void* data);
// Rows [rowBegin, rowBegin + rowCount) along dimension 0, all of every other dimension.
void writeRows(hid_t dataset, hid_t memType, hsize_t rowBegin, hsize_t rowCount, const void* data);
void readRows(hid_t dataset, hid_t memType, hsize_t rowBegin, hsize_t rowCount, void* data);

// Typed wrappers: create-and-write a 1-D or N-D dataset of numbers, read a whole dataset.
template <typename T> hid_t nativeType();
template <> inline hid_t nativeType<int8_t>()
{
    return H5T_NATIVE_INT8;
}
template <> inline hid_t nativeType<int16_t>()
{
    return H5T_NATIVE_INT16;
}
template <> inline hid_t nativeType<int32_t>()
{
    return H5T_NATIVE_INT32;
}
template <> inline hid_t nativeType<int64_t>()
{
    return H5T_NATIVE_INT64;
}
template <> inline hid_t nativeType<uint16_t>()
{
    return H5T_NATIVE_UINT16;
}
template <> inline hid_t nativeType<float>()
{
    return H5T_NATIVE_FLOAT;
}

// Whole dataset as T, checking it has `expectedElements` elements when >= 0.
template <typename T> std::vector<T> readVector(hid_t dataset, int64_t expectedElements = -1);
std::vector<std::string> readStrings(hid_t dataset); // 1-D vlen strings
void writeStrings(hid_t location, const std::string& name, const std::vector<std::string>& values);
std::string readScalarString(hid_t location, const std::string& name);
void writeScalarString(hid_t location, const std::string& name, const std::string& value);

// ---- attributes (scalar; overwritten in place when they exist) -----------------------------

bool hasAttribute(hid_t object, const std::string& name);
void writeAttribute(hid_t object, const std::string& name, const std::string& value);
void writeAttribute(hid_t object, const std::string& name, const char* value);
void writeAttribute(hid_t object, const std::string& name, int64_t value);
void writeAttribute(hid_t object, const std::string& name, uint64_t value);
void writeAttribute(hid_t object, const std::string& name, double value);
std::string readStringAttribute(hid_t object, const std::string& name);
int64_t readInt64Attribute(hid_t object, const std::string& name);
uint64_t readUInt64Attribute(hid_t object, const std::string& name);
double readDoubleAttribute(hid_t object, const std::string& name);

} // namespace moeatlas::h5
