// SHA-256 (FIPS 180-4), used to identify the config.json an atlas was recorded from.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace moeatlas {

std::string sha256Hex(std::string_view data);
// Hash of a file's bytes; throws InputError naming the file when it cannot be read.
std::string sha256File(const std::filesystem::path& path);

} // namespace moeatlas
