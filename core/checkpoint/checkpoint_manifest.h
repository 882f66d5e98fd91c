// SHA-256 manifest of a checkpoint directory: every file the writer made (name, size, sha256),
// kept in the model card (README.md) as a Markdown table between two HTML comments, and its check
// (`moeatlas inspect --verify DIR`). The card itself is not listed: it carries the list.
// Format: docs/user-guide.md, "Verifying an export"; choice: docs/decisions.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

struct ManifestEntry {
    std::string name; // relative to the checkpoint directory, '/'-separated
    uint64_t bytes = 0;
    std::string sha256; // lowercase hex
};

// Every regular file under `dir` (recursively), sorted by name, except the relative name `card`.
// Throws InputError naming a file that cannot be read.
std::vector<ManifestEntry> takeManifest(const std::filesystem::path& dir, const std::string& card);

// The Markdown section appended to the card: a heading, one sentence, the marked table.
std::string manifestSection(const std::vector<ManifestEntry>& entries);

// The entries of the manifest in `card` (the card's text); nullopt when it has no manifest.
// Throws InputError naming `cardName` and the line for a malformed manifest.
std::optional<std::vector<ManifestEntry>> parseManifest(const std::string& card, const std::string& cardName);

struct ManifestCheck {
    int64_t files = 0; // files listed
    uint64_t bytes = 0; // their total size
    // One line per problem, each naming the file: modified (size or sha256), missing, not listed.
    std::vector<std::string> problems;
    bool ok() const { return problems.empty(); }
};

// Checks `dir` against the manifest of its card `dir/<card>`. Throws InputError when the card is
// missing or holds no manifest (an export older than the manifest, or not made by moeatlas).
ManifestCheck verifyManifest(const std::filesystem::path& dir, const std::string& card = "README.md");

} // namespace moeatlas
