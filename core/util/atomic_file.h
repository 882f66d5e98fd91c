// Write-to-temp-then-rename helpers: no output ever appears under its final name half-written.
#pragma once

#include <filesystem>
#include <string>

namespace moeatlas {

// Temporary sibling path used while writing `finalPath` (same directory, so rename is atomic).
std::filesystem::path partialPathFor(const std::filesystem::path& finalPath);

// Checks that the directory of `path` exists and is writable; throws InputError naming it.
void ensureWritableDirectory(const std::filesystem::path& path);

// Atomically moves `from` to `to` (rename(2)); throws Error naming both on failure.
void commitFile(const std::filesystem::path& from, const std::filesystem::path& to);

// Writes `contents` to `path` through a temporary file and rename.
void writeFileAtomically(const std::filesystem::path& path, const std::string& contents);

} // namespace moeatlas
