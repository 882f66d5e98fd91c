// AtlasFile's result groups (/scores, /statistics, /evaluation, /fisher) and updates of a complete
// atlas: the lock, the unique update file, and the commit that compacts (docs/decisions.md, 25).
#include "atlas/atlas_state.h"

#include <cerrno>
#include <cstring>
#include <sys/resource.h>

namespace fs = std::filesystem;

namespace moeatlas {

using atlas_internal::AtlasState;
using atlas_internal::checked;
using atlas_internal::loadExisting;
using atlas_internal::Lock;

// ---- derived results (/scores, /statistics, /evaluation, /fisher) ---------------------------

const AtlasArray* AtlasResults::find(const std::string& name) const
{
    for (const AtlasArray& a : arrays)
        if (a.name == name)
            return &a;
    return nullptr;
}

fs::path AtlasFile::lockPathFor(const fs::path& atlas)
{
    std::error_code ec;
    fs::path resolved = fs::weakly_canonical(atlas, ec);
    if (ec)
        resolved = atlas;
    resolved += ".lock";
    return resolved;
}

namespace {

// HDF5 1.10's H5Ocopy crashes (a segfault in H5T_close_real) when a write into the destination fails
// halfway, as on a full disk; so before the atlas is copied into the update file, check that the file
// may grow by the atlas's size: against RLIMIT_FSIZE (ulimit -f) and the free space of its
// filesystem. Space taken by someone else during the copy can still fail it (the update file is then
// left as after a kill; the atlas itself is never written in place).
void checkRoomForCopy(hid_t staging, const fs::path& stagingPath, const fs::path& atlas)
{
    h5::flushFile(staging, false);
    std::error_code ec;
    const uint64_t copy = fs::file_size(atlas, ec);
    const uint64_t have = ec ? 0 : fs::file_size(stagingPath, ec);
    if (ec)
        return; // sizes unknown: let the copy try
    const auto needs = [&](uint64_t bytes) { return "it needs about " + std::to_string(bytes) + " bytes"; };
    rlimit limit {};
    if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && have + copy > limit.rlim_cur)
        throw Error(stagingPath.string() + ": cannot write the updated atlas: " + needs(have + copy)
            + ", the file size limit (ulimit -f) is " + std::to_string(limit.rlim_cur) + " bytes ("
            + std::strerror(EFBIG) + ")");
    const fs::space_info space = fs::space(stagingPath.parent_path(), ec);
    if (!ec && space.available < copy)
        throw Error(stagingPath.string() + ": cannot write the updated atlas: " + needs(copy) + " more, "
            + std::to_string(space.available) + " are free (" + std::strerror(ENOSPC) + ")");
}

// Temporary files of updates of `target` that ended without commit or cleanup (killed, power
// loss). Called with the update lock held: no live update of this atlas has a file then.
void removeAbandonedUpdates(const fs::path& target)
{
    std::error_code ec;
    for (fs::directory_iterator it(target.parent_path(), ec), end; !ec && it != end; it.increment(ec)) {
        const fs::path entry = it->path();
        std::error_code ignored;
        if (isUniqueSiblingName(target, "update", entry.filename().string()) && it->is_regular_file(ignored))
            fs::remove(entry, ignored);
    }
}

} // namespace

AtlasFile AtlasFile::openForUpdate(const fs::path& path)
{
    return openForUpdate(path, LockWait {});
}

AtlasFile AtlasFile::openForUpdate(const fs::path& path, const LockWait& wait)
{
    const auto requireComplete = [&](const AtlasFile& atlas) {
        if (!atlas.isComplete())
            throw InputError(path.string()
                + ": the atlas is not complete (capture still running "
                  "or interrupted); finish it before scoring");
    };
    // Refuse what no wait would make updatable before waiting at all.
    requireComplete(openReadOnly(path));
    std::error_code ec;
    const fs::path target = fs::canonical(path, ec);
    if (ec)
        throw InputError(path.string() + ": " + ec.message());
    ensureWritableDirectory(target); // where the update's file and the lock file go
    const fs::perms permissions = fs::status(target, ec).permissions();
    if (ec)
        throw InputError(path.string() + ": " + ec.message());

    // Not under the HDF5 lock: other atlases of this process (another thread's update) go on.
    FileLock turn = FileLock::acquire(lockPathFor(path), wait, "another update of " + path.string());
    removeAbandonedUpdates(target);

    Lock lock(h5::libraryMutex());
    auto impl = std::make_unique<Impl>(); // ends before `lock`: closes, removes, unlocks on failure
    impl->updateLock = std::move(turn);
    impl->target = target;
    // Read once the lock is held, so what an update committed while this one waited is kept.
    loadExisting(impl.get(), target, false);
    impl->path = path;
    if (!impl->complete) // replaced by an unfinished file while this update waited
        throw InputError(path.string() + ": the atlas is not complete; finish it before scoring");
    impl->stagingFile.path = createUniqueSibling(target, "update", permissions);
    impl->staging = h5::createFile(impl->stagingFile.path);
    impl->finalPath = path;
    impl->updating = true;
    impl->writable = true;
    return AtlasFile(std::move(impl));
}

namespace {

// Opens (or, when `create`, creates) every component of a relative group path "a/b/c".
h5::Group openGroupPath(hid_t file, const std::string& group, bool create)
{
    h5::Group current;
    hid_t location = file;
    size_t begin = 0;
    while (begin < group.size()) {
        size_t end = group.find('/', begin);
        if (end == std::string::npos)
            end = group.size();
        const std::string part = group.substr(begin, end - begin);
        if (part.empty())
            throw Error("empty component in result group path \"" + group + "\"");
        h5::Group next;
        if (h5::exists(location, part))
            next = h5::openGroup(location, part);
        else if (create)
            next = h5::createGroup(location, part);
        else
            return {};
        current = std::move(next);
        location = current.id();
        begin = end + 1;
    }
    return current;
}

herr_t collectGroupName(hid_t location, const char* name, const H5L_info_t*, void* out)
{
    H5O_info_t info;
    if (H5Oget_info_by_name(location, name, &info, H5P_DEFAULT) >= 0 && info.type == H5O_TYPE_GROUP)
        static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
}

} // namespace

void AtlasFile::writeResults(const std::string& group, const AtlasResults& results)
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireWritable();
    // An update writes into its own file; commitUpdate() adds the rest of the atlas around it.
    const hid_t file = impl.updating ? impl.staging.id() : impl.file.id();
    const size_t slash = group.rfind('/');
    h5::Group parent
        = slash == std::string::npos ? h5::openGroup(file, "/") : openGroupPath(file, group.substr(0, slash), true);
    const std::string leaf = slash == std::string::npos ? group : group.substr(slash + 1);
    if (h5::exists(parent.id(), leaf))
        h5::unlink(parent.id(), leaf); // replaced whole: stale arrays must not survive
    h5::Group g = h5::createGroup(parent.id(), leaf);
    h5::writeAttribute(g.id(), "params", results.paramsJson);
    h5::writeAttribute(g.id(), "inputs_hash", results.inputsHash);
    for (const AtlasArray& a : results.arrays) {
        std::vector<hsize_t> dims(a.dims.begin(), a.dims.end());
        size_t n = 1;
        for (hsize_t d : dims)
            n *= static_cast<size_t>(d);
        if (n != a.values.size())
            throw Error(impl.path.string() + ": /" + group + "/" + a.name + ": " + std::to_string(a.values.size())
                + " values for shape of " + std::to_string(n));
        h5::Dataset d = h5::createDataset(g.id(), a.name, H5T_IEEE_F64LE, dims);
        if (n > 0)
            h5::writeAll(d.id(), H5T_NATIVE_DOUBLE, a.values.data());
    }
    if (impl.updating && !impl.replacedByUpdate(group))
        impl.written.push_back(group);
    h5::flushFile(file, false);
}

std::optional<AtlasResults> AtlasFile::readResults(const std::string& group) const
{
    return readResults(group, {});
}

std::optional<AtlasResults> AtlasFile::readResults(
    const std::string& group, const std::vector<std::string>& arrays) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    // During an update a group it wrote is read from its file, any other from the atlas.
    const hid_t file = impl.updating && impl.replacedByUpdate(group) ? impl.staging.id() : impl.file.id();
    h5::Group g = openGroupPath(file, group, false);
    if (!g)
        return std::nullopt;
    AtlasResults results;
    if (h5::hasAttribute(g.id(), "params"))
        results.paramsJson = h5::readStringAttribute(g.id(), "params");
    if (h5::hasAttribute(g.id(), "inputs_hash"))
        results.inputsHash = h5::readStringAttribute(g.id(), "inputs_hash");
    std::vector<std::string> names;
    hsize_t index = 0;
    H5Literate(
        g.id(), H5_INDEX_NAME, H5_ITER_INC, &index,
        [](hid_t loc, const char* name, const H5L_info_t*, void* out) -> herr_t {
            H5O_info_t info;
            if (H5Oget_info_by_name(loc, name, &info, H5P_DEFAULT) >= 0 && info.type == H5O_TYPE_DATASET)
                static_cast<std::vector<std::string>*>(out)->emplace_back(name);
            return 0;
        },
        &names);
    for (const std::string& name : names) {
        if (!arrays.empty() && std::find(arrays.begin(), arrays.end(), name) == arrays.end())
            continue;
        h5::Dataset d = h5::openDataset(g.id(), name);
        AtlasArray a;
        a.name = name;
        for (hsize_t dim : h5::shape(d.id()))
            a.dims.push_back(dim);
        size_t n = 1;
        for (uint64_t dim : a.dims)
            n *= static_cast<size_t>(dim);
        a.values.resize(n);
        if (n > 0)
            h5::readAll(d.id(), H5T_NATIVE_DOUBLE, a.values.data());
        results.arrays.push_back(std::move(a));
    }
    return results;
}

std::vector<std::string> AtlasFile::resultGroups(const std::string& group) const
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireOpen();
    const auto subgroups = [&](hid_t file) {
        std::vector<std::string> names;
        h5::Group g = openGroupPath(file, group, false);
        if (!g)
            return names;
        hsize_t index = 0;
        H5Literate(g.id(), H5_INDEX_NAME, H5_ITER_INC, &index, collectGroupName, &names);
        return names;
    };
    if (!impl.updating)
        return subgroups(impl.file.id());
    if (impl.replacedByUpdate(group))
        return subgroups(impl.staging.id());
    // As commitUpdate() will merge them: the atlas's subgroups and those this update added.
    std::set<std::string> names;
    for (std::string& name : subgroups(impl.file.id()))
        names.insert(std::move(name));
    for (std::string& name : subgroups(impl.staging.id()))
        names.insert(std::move(name));
    return { names.begin(), names.end() };
}

namespace {

// Completes an update's file: every link of the atlas group `from` (path `prefix`) that the
// update did not replace is copied into `to`. A group present in both was created by the update
// as the parent of what it wrote ("fisher" of "fisher/ablation"): it gets the atlas group's
// attributes and is merged member by member. A group the update wrote is kept as written, and
// what the atlas had there is left behind, so the result holds no dead space.
void mergeAtlasInto(hid_t from, hid_t to, const std::string& prefix, const AtlasState& impl)
{
    h5::copyMissingAttributes(from, to);
    for (const std::string& name : h5::linkNames(from)) {
        std::string path = prefix;
        if (!path.empty())
            path += '/';
        path += name;
        if (!h5::exists(to, name)) {
            h5::copyLink(from, name, to);
        } else if (!impl.replacedByUpdate(path) && h5::isGroup(from, name) && h5::isGroup(to, name)) {
            const h5::Group source = h5::openGroup(from, name);
            const h5::Group target = h5::openGroup(to, name);
            mergeAtlasInto(source.id(), target.id(), path, impl);
        }
    }
}

} // namespace

void AtlasFile::commitUpdate()
{
    Lock lock(h5::libraryMutex());
    AtlasState& impl = checked(m_impl);
    impl.requireWritable();
    if (!impl.updating)
        throw Error(impl.path.string() + ": commitUpdate() needs an atlas from openForUpdate()");
    checkRoomForCopy(impl.staging.id(), impl.stagingFile.path, impl.target);
    {
        const h5::Group from = h5::openGroup(impl.file.id(), "/");
        const h5::Group to = h5::openGroup(impl.staging.id(), "/");
        mergeAtlasInto(from.id(), to.id(), "", impl);
    }
    h5::flushFile(impl.staging.id(), true);
    if (!impl.staging.close()) {
        const std::string detail = h5::takeErrorDetail();
        throw Error(impl.stagingFile.path.string() + ": closing the updated atlas failed"
            + (detail.empty() ? std::string() : " (HDF5: " + detail + ")"));
    }
    impl.close();
    commitFile(impl.stagingFile.path, impl.target);
    impl.stagingFile.release();
    impl.updating = false;
    impl.writable = false;
    impl.written.clear();
    // Reopen read-only so the object stays usable for reading back what was written; then let
    // the next update in.
    loadExisting(&impl, impl.target, false);
    impl.path = impl.finalPath;
    impl.updateLock.release();
}

} // namespace moeatlas
