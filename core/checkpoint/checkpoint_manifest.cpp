#include "checkpoint/checkpoint_manifest.h"

#include "util/error.h"
#include "util/sha256.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

constexpr const char* kBegin = "<!-- moeatlas-manifest: sha256 -->";
constexpr const char* kEnd = "<!-- /moeatlas-manifest -->";

std::string trim(const std::string& s)
{
    const auto first = s.find_first_not_of(" \t\r");
    if (first == std::string::npos)
        return {};
    return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

bool isSha256Hex(const std::string& s)
{
    return s.size() == 64
        && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// "| `name` | 123 | abcd... |" -> entry; nullopt for anything else.
std::optional<ManifestEntry> parseRow(const std::string& line)
{
    std::vector<std::string> cells;
    std::stringstream in(line);
    std::string cell;
    while (std::getline(in, cell, '|'))
        cells.push_back(trim(cell));
    // A leading '|' gives an empty first cell; a trailing one none (getline stops).
    if (cells.size() != 4 || !cells[0].empty())
        return std::nullopt;
    const std::string& name = cells[1];
    if (name.size() < 3 || name.front() != '`' || name.back() != '`')
        return std::nullopt;
    ManifestEntry e;
    e.name = name.substr(1, name.size() - 2);
    if (cells[2].empty() || !std::all_of(cells[2].begin(), cells[2].end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    try {
        e.bytes = std::stoull(cells[2]);
    } catch (const std::exception&) {
        return std::nullopt;
    }
    e.sha256 = cells[3];
    if (!isSha256Hex(e.sha256))
        return std::nullopt;
    return e;
}

std::string readText(const fs::path& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw InputError(path.string() + ": cannot read the model card");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

} // namespace

std::vector<ManifestEntry> takeManifest(const fs::path& dir, const std::string& card)
{
    std::vector<ManifestEntry> entries;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (!it->is_regular_file(ec))
            continue;
        const std::string name = it->path().lexically_relative(dir).generic_string();
        if (name == card)
            continue;
        ManifestEntry e;
        e.name = name;
        e.bytes = fs::file_size(it->path(), ec);
        if (ec)
            throw InputError(it->path().string() + ": cannot get the size (" + ec.message() + ")");
        e.sha256 = sha256File(it->path());
        entries.push_back(std::move(e));
    }
    if (ec)
        throw InputError(dir.string() + ": cannot list the directory (" + ec.message() + ")");
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    return entries;
}

std::string manifestSection(const std::vector<ManifestEntry>& entries)
{
    std::string s = "\n## Files\n\n"
                    "Every file of this checkpoint except this card, with its size in bytes and SHA-256; "
                    "`moeatlas inspect --verify <dir>` checks them (and reports files missing or not listed).\n\n";
    s += kBegin;
    s += "\n| file | bytes | sha256 |\n|---|---|---|\n";
    for (const ManifestEntry& e : entries)
        s += "| `" + e.name + "` | " + std::to_string(e.bytes) + " | " + e.sha256 + " |\n";
    s += kEnd;
    s += "\n";
    return s;
}

std::optional<std::vector<ManifestEntry>> parseManifest(const std::string& card, const std::string& cardName)
{
    const auto begin = card.find(kBegin);
    if (begin == std::string::npos)
        return std::nullopt;
    const auto end = card.find(kEnd, begin);
    if (end == std::string::npos)
        throw InputError(cardName + ": the file manifest has no end marker '" + kEnd + "'");
    std::vector<ManifestEntry> entries;
    std::stringstream in(card.substr(begin + std::string(kBegin).size(), end - begin - std::string(kBegin).size()));
    std::string line;
    int lineNo = 0;
    for (; std::getline(in, line); ++lineNo) {
        const std::string t = trim(line);
        if (t.empty() || t == "| file | bytes | sha256 |" || t == "|---|---|---|")
            continue;
        std::optional<ManifestEntry> e = parseRow(t);
        if (!e)
            throw InputError(cardName + ": file manifest line '" + t + "' is not '| `name` | bytes | sha256 |'");
        entries.push_back(std::move(*e));
    }
    return entries;
}

ManifestCheck verifyManifest(const fs::path& dir, const std::string& card)
{
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw InputError(dir.string() + ": not a directory");
    const fs::path cardPath = dir / card;
    if (!fs::is_regular_file(cardPath, ec))
        throw InputError(cardPath.string() + ": no model card, so no file manifest to verify against");
    const std::optional<std::vector<ManifestEntry>> listed = parseManifest(readText(cardPath), cardPath.string());
    if (!listed)
        throw InputError(cardPath.string()
            + ": the model card has no SHA-256 file manifest (an export made before manifests, or not by moeatlas)");

    ManifestCheck check;
    std::map<std::string, const ManifestEntry*> expected;
    for (const ManifestEntry& e : *listed) {
        expected[e.name] = &e;
        ++check.files;
        check.bytes += e.bytes;
    }
    // Sizes first: a file of the wrong size needs no hashing to be reported.
    std::vector<std::string> present;
    for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file(ec))
            present.push_back(it->path().lexically_relative(dir).generic_string());
    if (ec)
        throw InputError(dir.string() + ": cannot list the directory (" + ec.message() + ")");
    std::sort(present.begin(), present.end());
    for (const std::string& name : present) {
        if (name == card)
            continue;
        const auto found = expected.find(name);
        if (found == expected.end()) {
            check.problems.push_back((dir / name).string() + ": not listed in the manifest of " + card);
            continue;
        }
        const ManifestEntry& e = *found->second;
        expected.erase(found);
        const uint64_t size = fs::file_size(dir / name, ec);
        if (ec || size != e.bytes) {
            check.problems.push_back((dir / name).string() + ": " + std::to_string(size) + " bytes, the manifest says "
                + std::to_string(e.bytes));
            continue;
        }
        const std::string sha = sha256File(dir / name);
        if (sha != e.sha256)
            check.problems.push_back((dir / name).string() + ": sha256 " + sha + " differs from the manifest's "
                + e.sha256 + " (the file was modified or is damaged)");
    }
    for (const auto& [name, e] : expected)
        check.problems.push_back((dir / name).string() + ": listed in the manifest of " + card + " but missing");
    return check;
}

} // namespace moeatlas
