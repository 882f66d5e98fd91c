#include "util/atomic_file.h"

#include "util/error.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
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

void commitFile(const fs::path& from, const fs::path& to)
{
    if (std::rename(from.c_str(), to.c_str()) != 0)
        throw Error("cannot rename " + from.string() + " to " + to.string() + ": " + std::strerror(errno));
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
