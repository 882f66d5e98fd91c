// Write-to-temp-then-rename helpers: no output ever appears under its final name half-written.
#pragma once

#include <filesystem>
#include <string>

namespace moeatlas {

// Temporary sibling path used while writing `finalPath` (same directory, so rename is atomic).
std::filesystem::path partialPathFor(const std::filesystem::path& finalPath);

// Checks that the directory of `path` exists and is writable; throws InputError naming it.
void ensureWritableDirectory(const std::filesystem::path& path);

// Creates a new empty file "<finalPath>.<tag>-XXXXXX" beside finalPath (mkstemp(3): a unique name
// made with O_CREAT | O_EXCL, so concurrent writers never share one) with permission bits
// `permissions` (mkstemp makes 0600; the update of an atlas keeps the atlas's own bits). Returns
// its path; throws Error naming the directory on failure.
std::filesystem::path createUniqueSibling(
    const std::filesystem::path& finalPath, const std::string& tag, std::filesystem::perms permissions);

// True when `name` is a file name createUniqueSibling(finalPath, tag, ...) could have made.
bool isUniqueSiblingName(const std::filesystem::path& finalPath, const std::string& tag, const std::string& name);

// Atomically moves `from` to `to` (rename(2)), then syncs the directory so the rename survives a
// crash of the machine; throws Error naming both on failure.
void commitFile(const std::filesystem::path& from, const std::filesystem::path& to);

// Writes `contents` to `path` through a temporary file and rename.
void writeFileAtomically(const std::filesystem::path& path, const std::string& contents);

} // namespace moeatlas
