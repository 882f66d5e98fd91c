#include "util/atomic_file.h"

#include "util/error.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace moeatlas {

fs::path partialPathFor(const fs::path& finalPath)
{
    fs::path p = finalPath;
    p += ".partial";
    return p;
}

void ensureWritableDirectory(const fs::path& path)
{
    fs::path dir = path.parent_path();
    if (dir.empty())
        dir = ".";
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw InputError(path.string() + ": output directory '" + dir.string() + "' does not exist");
    if (::access(dir.c_str(), W_OK) != 0)
        throw InputError(
            path.string() + ": output directory '" + dir.string() + "' is not writable (" + std::strerror(errno) + ")");
}

namespace {

constexpr char kUniqueSuffix[] = "XXXXXX";

// Best effort: a file system that cannot sync a directory still did the rename.
void syncDirectoryOf(const fs::path& path)
{
    fs::path dir = path.parent_path();
    if (dir.empty())
        dir = ".";
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)::fsync(fd);
    ::close(fd);
}

} // namespace

fs::path createUniqueSibling(const fs::path& finalPath, const std::string& tag, fs::perms permissions)
{
    std::string name = finalPath.string() + "." + tag + "-" + kUniqueSuffix;
    const int fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0)
        throw Error(finalPath.string() + ": cannot create a temporary file in '" + finalPath.parent_path().string()
            + "': " + std::strerror(errno));
    const int status = ::fchmod(fd, static_cast<mode_t>(permissions & fs::perms::mask));
    const int error = errno;
    ::close(fd);
    if (status != 0) {
        ::unlink(name.c_str());
        throw Error(name + ": cannot set permissions: " + std::strerror(error));
    }
    return name;
}

bool isUniqueSiblingName(const fs::path& finalPath, const std::string& tag, const std::string& name)
{
    const std::string prefix = finalPath.filename().string() + "." + tag + "-";
    const size_t length = sizeof kUniqueSuffix - 1;
    if (name.size() != prefix.size() + length || name.compare(0, prefix.size(), prefix) != 0)
        return false;
    for (size_t i = prefix.size(); i < name.size(); ++i) {
        const char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

void commitFile(const fs::path& from, const fs::path& to)
{
    if (std::rename(from.c_str(), to.c_str()) != 0)
        throw Error("cannot rename " + from.string() + " to " + to.string() + ": " + std::strerror(errno));
    syncDirectoryOf(to);
}

void writeFileAtomically(const fs::path& path, const std::string& contents)
{
    ensureWritableDirectory(path);
    const fs::path tmp = partialPathFor(path);
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
        out.flush();
        if (!out)
            throw Error(tmp.string() + ": write failed");
    }
    commitFile(tmp, path);
}

} // namespace moeatlas
