#include "atlas/h5.h"

#include "util/error.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace moeatlas::h5 {

namespace {

// HDF5 registers H5_term_library with atexit(3) when it initialises; that pass closes the files still
// open, and after a failed close (a write that hit a full disk: the final flush fails and the file
// stays half-closed inside HDF5) it crashes in H5F__close_cb, turning a clean "File too large"
// error (exit 1) into a segfault at exit. Every file here is closed by its handle's destructor, so
// the library's own exit pass has nothing to do: switch it off before the first HDF5 call (this
// runs during static initialisation; H5dont_atexit has no effect once the library is up).
[[maybe_unused]] const bool g_noAtexit = [] {
    H5dont_atexit();
    return true;
}();

} // namespace

std::recursive_mutex& libraryMutex()
{
    static std::recursive_mutex mutex;
    return mutex;
}

void silenceErrorPrinting()
{
    // Messages are built from the stack ourselves (takeErrorDetail), so stderr stays clean.
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

// ---- names and errors ----------------------------------------------------------------------

std::string fileName(hid_t id)
{
    const ssize_t size = H5Fget_name(id, nullptr, 0);
    if (size <= 0)
        return "<unknown file>";
    std::string name(static_cast<size_t>(size), '\0');
    H5Fget_name(id, name.data(), name.size() + 1);
    return name;
}

std::string objectPath(hid_t id)
{
    const ssize_t size = H5Iget_name(id, nullptr, 0);
    if (size <= 0)
        return H5Iget_type(id) == H5I_FILE ? "/" : "<anonymous>";
    std::string name(static_cast<size_t>(size), '\0');
    H5Iget_name(id, name.data(), name.size() + 1);
    return name;
}

std::string childPath(hid_t location, const std::string& name)
{
    if (name.empty())
        return objectPath(location);
    if (name.front() == '/')
        return name;
    std::string parent = objectPath(location);
    if (parent.empty() || parent.back() != '/')
        parent += '/';
    return parent + name;
}

namespace {

herr_t innermostError(unsigned n, const H5E_error2_t* error, void* data)
{
    // Walking upward, entry 0 is where HDF5 first detected the problem: the most specific text.
    if (n == 0 && error->desc != nullptr)
        *static_cast<std::string*>(data) = error->desc;
    return 0;
}

std::string describe(hid_t location, const std::string& object, const std::string& what)
{
    // First: every HDF5 call (the name look-ups below too) starts by clearing the error stack.
    const std::string detail = takeErrorDetail();
    std::string message = fileName(location) + ": " + childPath(location, object) + ": " + what;
    if (!detail.empty())
        message += " (HDF5: " + detail + ")";
    // H5Z_filter_fletcher32: "data error detected by Fletcher32 checksum".
    if (detail.find("Fletcher32") != std::string::npos || detail.find("checksum") != std::string::npos)
        message += ": the stored data is damaged (its checksum does not match)";
    return message;
}

std::string withDetail(std::string message)
{
    const std::string detail = takeErrorDetail();
    if (!detail.empty())
        message += " (HDF5: " + detail + ")";
    return message;
}

} // namespace

std::string takeErrorDetail()
{
    std::string detail;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermostError, &detail);
    H5Eclear2(H5E_DEFAULT);
    // The file driver's messages hold a ctime(3) string with its newline: keep the message one line.
    std::replace(detail.begin(), detail.end(), '\n', ' ');
    return detail;
}

void failWrite(hid_t location, const std::string& object, const std::string& what)
{
    throw Error(describe(location, object, what));
}

void failRead(hid_t location, const std::string& object, const std::string& what)
{
    throw InputError(describe(location, object, what));
}

// ---- files and groups ----------------------------------------------------------------------

namespace {

// HDF5 opens files without O_CLOEXEC, so a process started meanwhile (a QProcess of the workbench
// or of a test) would keep the descriptor, and with it HDF5's flock on the file, after the atlas is
// closed here: a later open of that file in this process then fails ("unable to lock file").
void closeOnExec(hid_t file)
{
    void* handle = nullptr;
    if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || handle == nullptr) {
        takeErrorDetail();
        return;
    }
    const int fd = *static_cast<int*>(handle);
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0)
        ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

} // namespace

File createFile(const fs::path& path)
{
    silenceErrorPrinting();
    File file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    if (!file)
        throw Error(withDetail(path.string() + ": cannot create HDF5 file"));
    closeOnExec(file.id());
    return file;
}

File openFile(const fs::path& path, bool writable)
{
    silenceErrorPrinting();
    std::error_code ec;
    if (!fs::exists(path, ec))
        throw InputError(path.string() + ": no such file");
    if (!fs::is_regular_file(path, ec))
        throw InputError(path.string() + ": not a regular file");
    if (H5Fis_hdf5(path.c_str()) <= 0) {
        takeErrorDetail();
        throw InputError(path.string() + ": not an HDF5 file");
    }
    File file(H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!file) {
        std::string message = withDetail(path.string() + ": cannot open HDF5 file" + (writable ? " for writing" : ""));
        if (message.find("unable to lock file") != std::string::npos)
            message += "; another process (a running capture?) has it open for writing";
        throw InputError(message);
    }
    closeOnExec(file.id());
    return file;
}

void flushFile(hid_t file, bool syncToDisk)
{
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0)
        failWrite(file, "/", "flush failed");
    if (!syncToDisk)
        return;
    // H5Fflush only hands the bytes to the OS; fsync makes a completed layer survive a crash of
    // the machine too, not only of the process.
    void* handle = nullptr;
    if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || handle == nullptr)
        failWrite(file, "/", "cannot get the file descriptor to sync");
    if (::fsync(*static_cast<int*>(handle)) != 0)
        failWrite(file, "/", std::string("fsync failed: ") + std::strerror(errno));
}

Group createGroup(hid_t location, const std::string& name)
{
    Group group(H5Gcreate2(location, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (!group)
        failWrite(location, name, "cannot create group");
    return group;
}

Group openGroup(hid_t location, const std::string& name)
{
    if (!exists(location, name))
        failRead(location, name, "group is missing");
    Group group(H5Gopen2(location, name.c_str(), H5P_DEFAULT));
    if (!group)
        failRead(location, name, "cannot open group");
    return group;
}

bool exists(hid_t location, const std::string& name)
{
    const htri_t result = H5Lexists(location, name.c_str(), H5P_DEFAULT);
    if (result < 0)
        takeErrorDetail();
    return result > 0;
}

void unlink(hid_t location, const std::string& name)
{
    if (H5Ldelete(location, name.c_str(), H5P_DEFAULT) < 0)
        failWrite(location, name, "cannot delete");
}

// ---- copying between files -----------------------------------------------------------------

std::vector<std::string> linkNames(hid_t group)
{
    std::vector<std::string> names;
    hsize_t index = 0;
    const herr_t status = H5Literate(
        group, H5_INDEX_NAME, H5_ITER_INC, &index,
        [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
            static_cast<std::vector<std::string>*>(out)->emplace_back(name);
            return 0;
        },
        &names);
    if (status < 0)
        failRead(group, "", "cannot list the members of the group");
    return names;
}

bool isGroup(hid_t location, const std::string& name)
{
    H5O_info_t info;
    if (H5Oget_info_by_name(location, name.c_str(), &info, H5P_DEFAULT) < 0) {
        takeErrorDetail(); // a dangling soft link: not a group
        return false;
    }
    return info.type == H5O_TYPE_GROUP;
}

void copyLink(hid_t from, const std::string& name, hid_t to)
{
    H5L_info_t info;
    if (H5Lget_info(from, name.c_str(), &info, H5P_DEFAULT) < 0)
        failRead(from, name, "cannot read the link");
    if (info.type == H5L_TYPE_HARD) {
        if (H5Ocopy(from, name.c_str(), to, name.c_str(), H5P_DEFAULT, H5P_DEFAULT) < 0)
            failWrite(to, name, "cannot copy " + childPath(from, name) + " from " + fileName(from));
        return;
    }
    std::string value(info.u.val_size, '\0');
    if (H5Lget_val(from, name.c_str(), value.data(), value.size(), H5P_DEFAULT) < 0)
        failRead(from, name, "cannot read the link value");
    herr_t status = -1;
    if (info.type == H5L_TYPE_SOFT) {
        status = H5Lcreate_soft(value.c_str(), to, name.c_str(), H5P_DEFAULT, H5P_DEFAULT);
    } else if (info.type == H5L_TYPE_EXTERNAL) {
        const char* file = nullptr;
        const char* object = nullptr;
        if (H5Lunpack_elink_val(value.data(), value.size(), nullptr, &file, &object) < 0)
            failRead(from, name, "cannot read the external link");
        status = H5Lcreate_external(file, object, to, name.c_str(), H5P_DEFAULT, H5P_DEFAULT);
    } else {
        failRead(from, name, "link of a user-defined type, which updates cannot copy");
    }
    if (status < 0)
        failWrite(to, name, "cannot recreate the link");
}

namespace {

struct AttributeCopy {
    hid_t to = H5I_INVALID_HID;
    std::string failure; // set by the callback; thrown after the iteration ends
};

herr_t copyAttribute(hid_t from, const char* name, const H5A_info_t*, void* data)
{
    auto& copy = *static_cast<AttributeCopy*>(data);
    const htri_t present = H5Aexists(copy.to, name);
    if (present > 0)
        return 0;
    Attribute source(H5Aopen(from, name, H5P_DEFAULT));
    Datatype fileType(source ? H5Aget_type(source.id()) : H5I_INVALID_HID);
    Dataspace space(source ? H5Aget_space(source.id()) : H5I_INVALID_HID);
    Datatype memType(fileType ? H5Tget_native_type(fileType.id(), H5T_DIR_DEFAULT) : H5I_INVALID_HID);
    const hssize_t points = space ? H5Sget_simple_extent_npoints(space.id()) : -1;
    if (present < 0 || !memType || points < 0) {
        copy.failure = std::string("cannot read attribute ") + name;
        return -1;
    }
    std::vector<unsigned char> buffer(H5Tget_size(memType.id()) * static_cast<size_t>(std::max<hssize_t>(points, 1)));
    if (H5Aread(source.id(), memType.id(), buffer.data()) < 0) {
        copy.failure = std::string("cannot read attribute ") + name;
        return -1;
    }
    Attribute target(H5Acreate2(copy.to, name, fileType.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT));
    const bool written = target && H5Awrite(target.id(), memType.id(), buffer.data()) >= 0;
    // Variable-length strings were allocated by HDF5 in H5Aread.
    if (H5Tdetect_class(memType.id(), H5T_VLEN) > 0 || H5Tis_variable_str(memType.id()) > 0)
        H5Dvlen_reclaim(memType.id(), space.id(), H5P_DEFAULT, buffer.data());
    if (!written) {
        copy.failure = std::string("cannot write attribute ") + name;
        return -1;
    }
    return 0;
}

} // namespace

void copyMissingAttributes(hid_t from, hid_t to)
{
    AttributeCopy copy { to, {} };
    hsize_t index = 0;
    if (H5Aiterate2(from, H5_INDEX_NAME, H5_ITER_INC, &index, copyAttribute, &copy) < 0)
        failWrite(to, "", copy.failure.empty() ? "cannot copy the attributes of " + objectPath(from) : copy.failure);
}

// ---- types ---------------------------------------------------------------------------------

Datatype halfType()
{
    Datatype type(H5Tcopy(H5T_IEEE_F32LE));
    // Sign bit 15, exponent bits 10..14, mantissa bits 0..9, bias 15: IEEE binary16. Fields
    // first (they fit the 4-byte type), then shrink; the order matters to H5Tset_size.
    if (!type || H5Tset_fields(type.id(), 15, 10, 5, 0, 10) < 0 || H5Tset_size(type.id(), 2) < 0
        || H5Tset_precision(type.id(), 16) < 0 || H5Tset_ebias(type.id(), 15) < 0)
        throw Error(withDetail("cannot build the HDF5 half-precision type"));
    return type;
}

Datatype stringType()
{
    Datatype type(H5Tcopy(H5T_C_S1));
    if (!type || H5Tset_size(type.id(), H5T_VARIABLE) < 0 || H5Tset_cset(type.id(), H5T_CSET_UTF8) < 0)
        throw Error(withDetail("cannot build the HDF5 string type"));
    return type;
}

bool isHalfType(hid_t type)
{
    return H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 2;
}

// ---- datasets ------------------------------------------------------------------------------

namespace {

Dataspace simpleSpace(const std::vector<hsize_t>& dims)
{
    Dataspace space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    if (!space)
        throw Error(withDetail("cannot create an HDF5 dataspace"));
    return space;
}

Dataspace datasetSpace(hid_t dataset)
{
    Dataspace space(H5Dget_space(dataset));
    if (!space)
        failRead(dataset, "", "cannot get the dataspace");
    return space;
}

// Memory and file spaces selecting rows [begin, begin + count) of `dataset`.
std::pair<Dataspace, Dataspace> rowSpaces(hid_t dataset, hsize_t begin, hsize_t count, bool forWrite)
{
    Dataspace fileSpace = datasetSpace(dataset);
    std::vector<hsize_t> dims = shape(dataset);
    if (dims.empty() || begin > dims[0] || count > dims[0] - begin) {
        const std::string what = "rows [" + std::to_string(begin) + ", " + std::to_string(begin + count) + ") outside "
            + std::to_string(dims.empty() ? 0 : dims[0]) + " rows";
        forWrite ? failWrite(dataset, "", what) : failRead(dataset, "", what);
    }
    std::vector<hsize_t> start(dims.size(), 0);
    start[0] = begin;
    dims[0] = count;
    if (H5Sselect_hyperslab(fileSpace.id(), H5S_SELECT_SET, start.data(), nullptr, dims.data(), nullptr) < 0)
        failWrite(dataset, "", "cannot select a hyperslab");
    return { simpleSpace(dims), std::move(fileSpace) };
}

constexpr hsize_t kDefaultChunkBytes = 1 << 20;

std::vector<hsize_t> defaultChunk(hid_t fileType, const std::vector<hsize_t>& dims)
{
    // Whole rows along dimension 0, as many as fit kDefaultChunkBytes (at least one); every other
    // dimension whole. A zero extent gets chunk 1 (the dimension is made extendible, see below).
    hsize_t rowBytes = std::max<hsize_t>(H5Tget_size(fileType), 1);
    std::vector<hsize_t> chunk(dims.size(), 1);
    for (std::size_t d = 1; d < dims.size(); ++d) {
        chunk[d] = std::max<hsize_t>(dims[d], 1);
        rowBytes *= chunk[d];
    }
    if (!dims.empty())
        chunk[0] = std::clamp<hsize_t>(kDefaultChunkBytes / rowBytes, 1, std::max<hsize_t>(dims[0], 1));
    return chunk;
}

} // namespace

Dataset createDataset(
    hid_t location, const std::string& name, hid_t fileType, const std::vector<hsize_t>& dims, const Layout& layout)
{
    PropList dcpl(H5Pcreate(H5P_DATASET_CREATE));
    if (!dcpl)
        failWrite(location, name, "cannot create dataset properties");
    // Every dataset of fixed-size elements is chunked so that it can carry the Fletcher-32 checksum
    // (docs/atlas-format.md, "Integrity"); one asked for contiguous gets chunks of whole rows.
    // Variable-length strings cannot: HDF5 refuses the filter there (their bytes sit in the global
    // heap, the dataset holds references), so they keep the layout asked for.
    const bool checksum = H5Tis_variable_str(fileType) <= 0 && H5Tget_class(fileType) != H5T_VLEN;
    const std::vector<hsize_t> chunk = !layout.chunk.empty() ? layout.chunk
        : checksum                                           ? defaultChunk(fileType, dims)
                                                             : std::vector<hsize_t> {};
    if (!chunk.empty() && H5Pset_chunk(dcpl.id(), static_cast<int>(chunk.size()), chunk.data()) < 0)
        failWrite(location, name, "cannot set chunking");
    if (!layout.chunk.empty() && layout.gzipLevel > 0) {
        // Shuffle groups the bytes of each float by significance, which deflate likes.
        if (layout.shuffle && H5Pset_shuffle(dcpl.id()) < 0)
            failWrite(location, name, "cannot enable the shuffle filter");
        if (H5Pset_deflate(dcpl.id(), static_cast<unsigned>(layout.gzipLevel)) < 0)
            failWrite(location, name, "cannot enable gzip compression");
    }
    // Last in the pipeline: the checksum covers the bytes as stored (compressed), and a read checks
    // it before anything is decompressed.
    if (checksum && H5Pset_fletcher32(dcpl.id()) < 0)
        failWrite(location, name, "cannot enable the Fletcher-32 checksum");
    // A chunked dimension may not be smaller than its chunk unless it is extendible: zero extents
    // (an empty dataset) get an unlimited maximum.
    std::vector<hsize_t> maxDims = dims;
    for (hsize_t& m : maxDims)
        if (m == 0 && !chunk.empty())
            m = H5S_UNLIMITED;
    Dataspace space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxDims.data()));
    if (!space)
        failWrite(location, name, "cannot create the dataspace");
    Dataset dataset(H5Dcreate2(location, name.c_str(), fileType, space.id(), H5P_DEFAULT, dcpl.id(), H5P_DEFAULT));
    if (!dataset)
        failWrite(location, name, "cannot create dataset");
    return dataset;
}

Dataset openDataset(hid_t location, const std::string& name, size_t chunkCacheBytes)
{
    if (!exists(location, name))
        failRead(location, name, "dataset is missing");
    PropList dapl(H5Pcreate(H5P_DATASET_ACCESS));
    if (chunkCacheBytes > 0)
        H5Pset_chunk_cache(dapl.id(), 521, chunkCacheBytes, 1.0);
    Dataset dataset(H5Dopen2(location, name.c_str(), dapl.id()));
    if (!dataset)
        failRead(location, name, "cannot open dataset");
    return dataset;
}

std::vector<hsize_t> shape(hid_t dataset)
{
    Dataspace space = datasetSpace(dataset);
    const int rank = H5Sget_simple_extent_ndims(space.id());
    if (rank < 0)
        failRead(dataset, "", "cannot get the rank");
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr);
    return dims;
}

Datatype datasetType(hid_t dataset)
{
    Datatype type(H5Dget_type(dataset));
    if (!type)
        failRead(dataset, "", "cannot get the datatype");
    return type;
}

void writeAll(hid_t dataset, hid_t memType, const void* data)
{
    if (H5Dwrite(dataset, memType, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        failWrite(dataset, "", "write failed");
}

void readAll(hid_t dataset, hid_t memType, void* data)
{
    if (H5Dread(dataset, memType, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        failRead(dataset, "", "read failed");
}

void writeRows(hid_t dataset, hid_t memType, hsize_t rowBegin, hsize_t rowCount, const void* data)
{
    if (rowCount == 0)
        return;
    auto [memSpace, fileSpace] = rowSpaces(dataset, rowBegin, rowCount, true);
    if (H5Dwrite(dataset, memType, memSpace.id(), fileSpace.id(), H5P_DEFAULT, data) < 0)
        failWrite(dataset, "",
            "write of rows [" + std::to_string(rowBegin) + ", " + std::to_string(rowBegin + rowCount) + ") failed");
}

void readRows(hid_t dataset, hid_t memType, hsize_t rowBegin, hsize_t rowCount, void* data)
{
    if (rowCount == 0)
        return;
    auto [memSpace, fileSpace] = rowSpaces(dataset, rowBegin, rowCount, false);
    if (H5Dread(dataset, memType, memSpace.id(), fileSpace.id(), H5P_DEFAULT, data) < 0)
        failRead(dataset, "",
            "read of rows [" + std::to_string(rowBegin) + ", " + std::to_string(rowBegin + rowCount) + ") failed");
}

template <typename T> std::vector<T> readVector(hid_t dataset, int64_t expectedElements)
{
    hsize_t count = 1;
    for (hsize_t d : shape(dataset))
        count *= d;
    if (expectedElements >= 0 && count != static_cast<hsize_t>(expectedElements))
        failRead(
            dataset, "", "has " + std::to_string(count) + " elements, expected " + std::to_string(expectedElements));
    Datatype type = datasetType(dataset);
    const H5T_class_t typeClass = H5Tget_class(type.id());
    if (typeClass != H5T_INTEGER && typeClass != H5T_FLOAT)
        failRead(dataset, "", "is not numeric");
    std::vector<T> values(count);
    if (count > 0)
        readAll(dataset, nativeType<T>(), values.data());
    return values;
}

template std::vector<int16_t> readVector<int16_t>(hid_t, int64_t);
template std::vector<int32_t> readVector<int32_t>(hid_t, int64_t);
template std::vector<int64_t> readVector<int64_t>(hid_t, int64_t);
template std::vector<uint16_t> readVector<uint16_t>(hid_t, int64_t);
template std::vector<float> readVector<float>(hid_t, int64_t);

namespace {

// Reads `count` strings stored as vlen or fixed-length strings, through `read(memType, buffer)`.
template <typename Read> std::vector<std::string> readStringData(hid_t fileType, hid_t space, size_t count, Read read)
{
    std::vector<std::string> result;
    result.reserve(count);
    if (H5Tis_variable_str(fileType) > 0) {
        Datatype memType = stringType();
        std::vector<char*> buffer(count, nullptr);
        if (!read(memType.id(), buffer.data()))
            return {};
        for (char* s : buffer)
            result.emplace_back(s != nullptr ? s : "");
        H5Dvlen_reclaim(memType.id(), space, H5P_DEFAULT, buffer.data());
        return result;
    }
    const size_t size = H5Tget_size(fileType);
    Datatype memType(H5Tcopy(H5T_C_S1));
    H5Tset_size(memType.id(), size);
    H5Tset_strpad(memType.id(), H5T_STR_NULLPAD);
    std::vector<char> buffer(size * count);
    if (!read(memType.id(), buffer.data()))
        return {};
    for (size_t i = 0; i < count; ++i) {
        const char* s = buffer.data() + i * size;
        result.emplace_back(s, ::strnlen(s, size));
    }
    return result;
}

} // namespace

std::vector<std::string> readStrings(hid_t dataset)
{
    Datatype type = datasetType(dataset);
    if (H5Tget_class(type.id()) != H5T_STRING)
        failRead(dataset, "", "is not a string dataset");
    Dataspace space = datasetSpace(dataset);
    const hssize_t count = H5Sget_simple_extent_npoints(space.id());
    if (count <= 0)
        return {};
    auto values = readStringData(type.id(), space.id(), static_cast<size_t>(count), [&](hid_t memType, void* buffer) {
        return H5Dread(dataset, memType, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer) >= 0;
    });
    if (values.size() != static_cast<size_t>(count))
        failRead(dataset, "", "cannot read strings");
    return values;
}

void writeStrings(hid_t location, const std::string& name, const std::vector<std::string>& values)
{
    Datatype type = stringType();
    Dataset dataset = createDataset(location, name, type.id(), { values.size() });
    if (values.empty())
        return;
    std::vector<const char*> pointers;
    pointers.reserve(values.size());
    for (const std::string& v : values)
        pointers.push_back(v.c_str());
    writeAll(dataset.id(), type.id(), pointers.data());
}

std::string readScalarString(hid_t location, const std::string& name)
{
    Dataset dataset = openDataset(location, name);
    std::vector<std::string> values = readStrings(dataset.id());
    if (values.size() != 1)
        failRead(location, name, "is not a scalar string");
    return values.front();
}

void writeScalarString(hid_t location, const std::string& name, const std::string& value)
{
    Datatype type = stringType();
    Dataspace space(H5Screate(H5S_SCALAR));
    Dataset dataset(H5Dcreate2(location, name.c_str(), type.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (!dataset)
        failWrite(location, name, "cannot create dataset");
    const char* pointer = value.c_str();
    writeAll(dataset.id(), type.id(), &pointer);
}

// ---- attributes ----------------------------------------------------------------------------

bool hasAttribute(hid_t object, const std::string& name)
{
    const htri_t result = H5Aexists(object, name.c_str());
    if (result < 0)
        takeErrorDetail();
    return result > 0;
}

namespace {

std::string attributeName(const std::string& name)
{
    return "attribute '" + name + "'";
}

// Writes a scalar attribute, reusing an existing one of the same type class in place (no
// object-header reshuffle) and replacing one of another class.
void writeScalarAttribute(hid_t object, const std::string& name, hid_t fileType, hid_t memType, const void* value)
{
    Attribute attribute;
    if (hasAttribute(object, name)) {
        Attribute existing(H5Aopen(object, name.c_str(), H5P_DEFAULT));
        Datatype existingType(existing ? H5Aget_type(existing.id()) : H5I_INVALID_HID);
        const bool sameKind = existingType && H5Tget_class(existingType.id()) == H5Tget_class(fileType)
            && H5Tis_variable_str(existingType.id()) == H5Tis_variable_str(fileType);
        if (sameKind) {
            attribute = std::move(existing);
        } else {
            existing.reset();
            if (H5Adelete(object, name.c_str()) < 0)
                failWrite(object, "", "cannot replace " + attributeName(name));
        }
    }
    if (!attribute) {
        Dataspace space(H5Screate(H5S_SCALAR));
        attribute = Attribute(H5Acreate2(object, name.c_str(), fileType, space.id(), H5P_DEFAULT, H5P_DEFAULT));
        if (!attribute)
            failWrite(object, "", "cannot create " + attributeName(name));
    }
    if (H5Awrite(attribute.id(), memType, value) < 0)
        failWrite(object, "", "cannot write " + attributeName(name));
}

Attribute openScalarAttribute(hid_t object, const std::string& name, Datatype& type)
{
    if (!hasAttribute(object, name))
        failRead(object, "", attributeName(name) + " is missing");
    Attribute attribute(H5Aopen(object, name.c_str(), H5P_DEFAULT));
    if (!attribute)
        failRead(object, "", "cannot open " + attributeName(name));
    type = Datatype(H5Aget_type(attribute.id()));
    Dataspace space(H5Aget_space(attribute.id()));
    if (!type || !space || H5Sget_simple_extent_npoints(space.id()) != 1)
        failRead(object, "", attributeName(name) + " is not a single value");
    return attribute;
}

template <typename T> T readNumberAttribute(hid_t object, const std::string& name, hid_t memType, bool allowFloat)
{
    Datatype type;
    Attribute attribute = openScalarAttribute(object, name, type);
    const H5T_class_t typeClass = H5Tget_class(type.id());
    if (typeClass != H5T_INTEGER && !(allowFloat && typeClass == H5T_FLOAT))
        failRead(object, "", attributeName(name) + " is not " + (allowFloat ? "a number" : "an integer"));
    T value {};
    if (H5Aread(attribute.id(), memType, &value) < 0)
        failRead(object, "", "cannot read " + attributeName(name));
    return value;
}

} // namespace

void writeAttribute(hid_t object, const std::string& name, const std::string& value)
{
    Datatype type = stringType();
    const char* pointer = value.c_str();
    writeScalarAttribute(object, name, type.id(), type.id(), &pointer);
}

void writeAttribute(hid_t object, const std::string& name, const char* value)
{
    writeAttribute(object, name, std::string(value));
}

void writeAttribute(hid_t object, const std::string& name, int64_t value)
{
    writeScalarAttribute(object, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void writeAttribute(hid_t object, const std::string& name, uint64_t value)
{
    writeScalarAttribute(object, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}

void writeAttribute(hid_t object, const std::string& name, double value)
{
    writeScalarAttribute(object, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

std::string readStringAttribute(hid_t object, const std::string& name)
{
    Datatype type;
    Attribute attribute = openScalarAttribute(object, name, type);
    if (H5Tget_class(type.id()) != H5T_STRING)
        failRead(object, "", attributeName(name) + " is not a string");
    Dataspace space(H5Aget_space(attribute.id()));
    auto values = readStringData(type.id(), space.id(), 1,
        [&](hid_t memType, void* buffer) { return H5Aread(attribute.id(), memType, buffer) >= 0; });
    if (values.size() != 1)
        failRead(object, "", "cannot read " + attributeName(name));
    return values.front();
}

int64_t readInt64Attribute(hid_t object, const std::string& name)
{
    return readNumberAttribute<int64_t>(object, name, H5T_NATIVE_INT64, false);
}

uint64_t readUInt64Attribute(hid_t object, const std::string& name)
{
    return readNumberAttribute<uint64_t>(object, name, H5T_NATIVE_UINT64, false);
}

double readDoubleAttribute(hid_t object, const std::string& name)
{
    return readNumberAttribute<double>(object, name, H5T_NATIVE_DOUBLE, true);
}

} // namespace moeatlas::h5
