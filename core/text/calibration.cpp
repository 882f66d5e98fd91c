#include "text/calibration.h"

#include "text/tokenizer.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace moeatlas {

namespace {

bool isBlank(std::string_view text)
{
    return text.find_first_not_of(" \t\n\r\f\v") == std::string_view::npos;
}

std::string lowercase(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

bool isJsonlPath(const std::string& path)
{
    const std::string ext = lowercase(fs::path(path).extension().string());
    return ext == ".jsonl" || ext == ".ndjson" || ext == ".json";
}

// The file's text with a UTF-8 BOM dropped and "\r\n" read as "\n", so that the same text saved
// on Windows tokenizes the same.
std::string readNormalizedText(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw InputError(path + ": cannot open calibration file");
    std::string raw { std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>() };
    if (in.bad())
        throw InputError(path + ": read error");
    std::size_t begin = raw.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
    std::string out;
    out.reserve(raw.size() - begin);
    for (std::size_t i = begin; i < raw.size(); ++i)
        if (!(raw[i] == '\r' && i + 1 < raw.size() && raw[i + 1] == '\n'))
            out.push_back(raw[i]);
    return out;
}

// Calls fn(json, "file:line") for every non-blank line of a JSONL file until fn returns false,
// after checking that the line is a JSON object; `expected` describes a record for the errors.
template <typename Fn> void forEachJsonlRecord(const std::string& path, const std::string& expected, Fn&& fn)
{
    std::ifstream in(path);
    if (!in)
        throw InputError(path + ": cannot open calibration file");
    std::string line;
    int64_t lineNo = 0;
    while (std::getline(in, line)) {
        ++lineNo;
        if (isBlank(line))
            continue;
        const std::string where = path + ":" + std::to_string(lineNo);
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) { // parse_error, or out_of_range for a number overflow
            throw InputError(where + ": invalid JSON (" + e.what() + "); expected " + expected);
        }
        if (!j.is_object())
            throw InputError(where + ": expected " + expected + ", got " + std::string(j.type_name()));
        if (!fn(j, where))
            return;
    }
}

std::string describeTextSources(const CalibrationSet& set)
{
    std::set<std::string> formats;
    bool textFile = false, textDirectory = false;
    for (const PackedDomain& d : set.domains) {
        formats.insert(d.format);
        if (d.format == kFormatText) {
            std::error_code ec;
            (fs::is_directory(d.source, ec) ? textDirectory : textFile) = true;
        }
    }
    std::vector<std::string> parts;
    if (textFile)
        parts.emplace_back(set.text.wholeFile ? "plain text files are one document each (whole files)"
                                              : "plain text files have one document per blank-line-separated block");
    if (textDirectory)
        parts.emplace_back("a directory has one document per .txt file");
    if (formats.count(kFormatTextJsonlPrefix + set.text.textField))
        parts.push_back("JSONL documents are the string field \"" + set.text.textField + "\"");
    if (formats.count(kFormatMessagesJsonl))
        parts.emplace_back("JSONL messages are rendered as \"<role>: <content>\" lines joined by \"\\n\" "
                           "(no chat template applied)");
    std::string out;
    for (const std::string& p : parts)
        out += "; " + p;
    return out;
}

} // namespace

int64_t CalibrationSet::totalTokens() const
{
    int64_t n = 0;
    for (const PackedDomain& d : domains)
        for (const auto& s : d.sequences)
            n += static_cast<int64_t>(s.size());
    return n;
}

bool CalibrationSet::hasTextDomain() const
{
    return std::any_of(domains.begin(), domains.end(), [](const PackedDomain& d) { return isTextFormat(d.format); });
}

std::string CalibrationSet::describePacking() const
{
    std::ostringstream s;
    s << "documents shuffled with seed " << packing.seed << ", concatenated per domain"
      << (packing.bosToken ? " with BOS " + std::to_string(*packing.bosToken) + " before each document" : "")
      << ", cut into sequences of " << packing.seqLen << " tokens"
      << (packing.dropRemainder ? ", last partial sequence dropped" : "") << "; domains never share a sequence";
    if (hasTextDomain())
        s << "; text encoded with " << tokenizer << " without its special-token template" << describeTextSources(*this);
    return s.str();
}

DomainSource parseDomainArgument(const std::string& arg)
{
    const auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
        throw RequestError("domains", "domain '" + arg + "': expected NAME=PATH or NAME=PATH:N");
    DomainSource d;
    d.name = arg.substr(0, eq);
    d.path = arg.substr(eq + 1);
    // A trailing ":N" with N all digits is a sample cap; other colons belong to the path.
    const auto colon = d.path.rfind(':');
    if (colon != std::string::npos && colon + 1 < d.path.size()
        && std::all_of(d.path.begin() + static_cast<std::ptrdiff_t>(colon) + 1, d.path.end(),
            [](char c) { return c >= '0' && c <= '9'; })) {
        d.maxSamples = std::stoll(d.path.substr(colon + 1));
        d.path = d.path.substr(0, colon);
        if (*d.maxSamples <= 0)
            throw RequestError("domains", "domain '" + arg + "': the sample cap must be > 0");
    }
    for (char c : d.name)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
            throw RequestError("domains", "domain '" + arg + "': domain names use letters, digits, '_', '-', '.'");
    return d;
}

std::string detectFormat(const std::string& path, const TextOptions& options)
{
    std::error_code ec;
    if (fs::is_directory(path, ec))
        return kFormatText;
    if (!fs::exists(path, ec))
        throw InputError(path + ": cannot open calibration file (no such file or directory)");
    if (!isJsonlPath(path))
        return kFormatText;
    std::string format;
    const std::string expected
        = "an object with \"input_ids\", \"messages\" or the text field \"" + options.textField + "\"";
    forEachJsonlRecord(path, expected, [&](const nlohmann::json& j, const std::string& where) {
        if (j.contains("input_ids"))
            format = kFormatInputIdsJsonl;
        else if (j.contains(options.textField))
            format = kFormatTextJsonlPrefix + options.textField;
        else if (j.contains("messages"))
            format = kFormatMessagesJsonl;
        else
            throw InputError(where + ": expected " + expected);
        return false; // the first record decides
    });
    if (format.empty())
        throw InputError(path + ": no documents (the file is empty)");
    return format;
}

bool isTextFormat(const std::string& format)
{
    return format == kFormatText || format == kFormatMessagesJsonl || format.starts_with(kFormatTextJsonlPrefix);
}

std::vector<TextDocument> readTextFile(const std::string& path, bool wholeFile)
{
    const std::string text = readNormalizedText(path);
    std::vector<TextDocument> docs;
    if (wholeFile) {
        if (!isBlank(text))
            docs.push_back({ text, path });
    } else {
        std::string block;
        int64_t blockLine = 0, lineNo = 0;
        std::size_t pos = 0;
        auto flush = [&] {
            if (blockLine > 0)
                docs.push_back({ std::move(block), path + ":" + std::to_string(blockLine) });
            block.clear();
            blockLine = 0;
        };
        while (pos <= text.size()) {
            std::size_t end = text.find('\n', pos);
            if (end == std::string::npos)
                end = text.size();
            const std::string_view line(text.data() + pos, end - pos);
            ++lineNo;
            if (isBlank(line)) {
                flush();
            } else {
                if (blockLine == 0)
                    blockLine = lineNo;
                else
                    block.push_back('\n');
                block.append(line);
            }
            pos = end + 1;
        }
        flush();
    }
    if (docs.empty())
        throw InputError(path + ": no documents (the file is empty or holds only blank lines)");
    return docs;
}

std::vector<TextDocument> readTextDirectory(const std::string& path)
{
    std::vector<fs::path> files;
    std::error_code ec;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file() && it->path().extension() == ".txt")
            files.push_back(it->path());
    if (ec)
        throw InputError(path + ": cannot list the directory (" + ec.message() + ")");
    if (files.empty())
        throw InputError(path
            + ": no .txt files directly in this directory (a directory domain reads one document "
              "per .txt file)");
    // Byte order of the names: the same on every file system and locale.
    std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.string() < b.string(); });
    std::vector<TextDocument> docs;
    for (const fs::path& f : files) {
        std::string text = readNormalizedText(f.string());
        if (!isBlank(text))
            docs.push_back({ std::move(text), f.string() });
    }
    if (docs.empty())
        throw InputError(path + ": no documents (every .txt file is empty or blank)");
    return docs;
}

std::vector<TextDocument> readTextJsonl(const std::string& path, const std::string& field)
{
    std::vector<TextDocument> docs;
    const std::string expected = "an object with a string field \"" + field + "\"";
    forEachJsonlRecord(path, expected, [&](const nlohmann::json& j, const std::string& where) {
        const auto it = j.find(field);
        if (it == j.end() || !it->is_string())
            throw InputError(
                where + ": expected " + expected + (it == j.end() ? "" : ", got " + std::string(it->type_name())));
        if (!it->get_ref<const std::string&>().empty())
            docs.push_back({ it->get<std::string>(), where });
        return true;
    });
    if (docs.empty())
        throw InputError(path + ": no documents (the file is empty or every \"" + field + "\" is empty)");
    return docs;
}

std::vector<TextDocument> readMessagesJsonl(const std::string& path)
{
    std::vector<TextDocument> docs;
    const std::string expected = "an object with a \"messages\" array of {\"role\", \"content\"}";
    forEachJsonlRecord(path, expected, [&](const nlohmann::json& j, const std::string& where) {
        const auto it = j.find("messages");
        if (it == j.end() || !it->is_array())
            throw InputError(where + ": expected " + expected);
        std::string text;
        for (std::size_t i = 0; i < it->size(); ++i) {
            const nlohmann::json& m = (*it)[i];
            if (!m.is_object() || !m.contains("role") || !m.at("role").is_string() || !m.contains("content")
                || !m.at("content").is_string())
                throw InputError(where + ": messages[" + std::to_string(i)
                    + "]: expected an object with string \"role\" and \"content\", got " + m.dump());
            if (i > 0)
                text.push_back('\n');
            text += m.at("role").get<std::string>() + ": " + m.at("content").get<std::string>();
        }
        if (!text.empty())
            docs.push_back({ std::move(text), where });
        return true;
    });
    if (docs.empty())
        throw InputError(path + ": no documents (the file is empty or every \"messages\" list is empty)");
    return docs;
}

std::vector<TextDocument> readTextDocuments(
    const std::string& path, const std::string& format, const TextOptions& options)
{
    if (format == kFormatText) {
        std::error_code ec;
        return fs::is_directory(path, ec) ? readTextDirectory(path) : readTextFile(path, options.wholeFile);
    }
    if (format == kFormatMessagesJsonl)
        return readMessagesJsonl(path);
    if (format.starts_with(kFormatTextJsonlPrefix))
        return readTextJsonl(path, format.substr(std::string_view(kFormatTextJsonlPrefix).size()));
    throw InputError(path + ": format " + format + " is not a text format");
}

std::vector<std::vector<int32_t>> readInputIdsJsonl(const std::string& path, int64_t vocabSize)
{
    std::vector<std::vector<int32_t>> docs;
    const std::string expected = "an object with an \"input_ids\" array of integers";
    forEachJsonlRecord(path, expected, [&](const nlohmann::json& j, const std::string& where) {
        if (!j.contains("input_ids") || !j.at("input_ids").is_array())
            throw InputError(where + ": expected " + expected);
        std::vector<int32_t> ids;
        ids.reserve(j.at("input_ids").size());
        for (const auto& v : j.at("input_ids")) {
            if (!v.is_number_integer())
                throw InputError(where + ": \"input_ids\" holds " + v.dump() + ", expected integers");
            const int64_t id = v.get<int64_t>();
            if (id < 0 || (vocabSize > 0 && id >= vocabSize))
                throw InputError(where + ": token id " + std::to_string(id) + " is outside the vocabulary [0, "
                    + std::to_string(vocabSize) + ")");
            ids.push_back(static_cast<int32_t>(id));
        }
        if (!ids.empty())
            docs.push_back(std::move(ids));
        return true;
    });
    if (docs.empty())
        throw InputError(path + ": no documents (the file is empty or every input_ids list is empty)");
    return docs;
}

std::vector<std::vector<int32_t>> tokenizeDocuments(
    const std::vector<TextDocument>& documents, const Tokenizer& tokenizer, int64_t vocabSize)
{
    std::vector<std::vector<int32_t>> out;
    out.reserve(documents.size());
    for (const TextDocument& doc : documents) {
        // No special-token template: BOS is added (or not) by the packer, the same way for
        // every tokenizer family and for input_ids sources.
        std::vector<int32_t> ids = tokenizer.encode(doc.text, /*addSpecialTokens=*/false);
        for (int32_t id : ids)
            if (id < 0 || (vocabSize > 0 && id >= vocabSize))
                throw InputError(doc.origin + ": " + tokenizer.source() + " encodes this document to token id "
                    + std::to_string(id) + ", outside the model vocabulary [0, " + std::to_string(vocabSize)
                    + ") (is it the checkpoint's tokenizer?)");
        if (!ids.empty())
            out.push_back(std::move(ids));
    }
    return out;
}
std::vector<std::vector<int32_t>> packDocuments(
    std::vector<std::vector<int32_t>> documents, const PackingOptions& options, std::optional<int64_t> maxSequences)
{
    if (options.seqLen <= 0)
        throw RequestError("seqLen", std::to_string(options.seqLen) + " tokens per sequence (expected a count > 0)");
    std::vector<std::size_t> order(documents.size());
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(options.seed);
    // Fisher-Yates with our own draw so the order is identical across standard libraries.
    for (std::size_t i = order.size(); i > 1; --i)
        std::swap(order[i - 1], order[static_cast<std::size_t>(rng() % i)]);

    std::vector<std::vector<int32_t>> out;
    std::vector<int32_t> current;
    current.reserve(static_cast<std::size_t>(options.seqLen));
    auto full = [&] { return maxSequences && static_cast<int64_t>(out.size()) >= *maxSequences; };
    auto push = [&](int32_t id) {
        current.push_back(id);
        if (static_cast<int64_t>(current.size()) == options.seqLen) {
            out.push_back(std::move(current));
            current = {};
            current.reserve(static_cast<std::size_t>(options.seqLen));
        }
    };
    for (std::size_t i : order) {
        if (full())
            break;
        if (options.bosToken)
            push(*options.bosToken);
        for (int32_t id : documents[i]) {
            push(id);
            if (full())
                break;
        }
    }
    if (!options.dropRemainder && !current.empty() && !full())
        out.push_back(std::move(current));
    return out;
}

CalibrationSet buildCalibrationSet(const std::vector<DomainSource>& domains, const PackingOptions& packing,
    const TextOptions& text, const Tokenizer* tokenizer, const std::string& tokenizerDescription, int64_t vocabSize)
{
    if (domains.empty())
        throw RequestError("domains", "no calibration data: give at least one domain");
    if (packing.bosToken && (*packing.bosToken < 0 || (vocabSize > 0 && *packing.bosToken >= vocabSize)))
        throw InputError("BOS token " + std::to_string(*packing.bosToken) + " is outside the model vocabulary [0, "
            + std::to_string(vocabSize) + ")");
    CalibrationSet set;
    set.packing = packing;
    set.text = text;
    std::set<std::string> names;
    for (const DomainSource& d : domains) {
        if (!names.insert(d.name).second)
            throw RequestError("domains", "domain '" + d.name + "': the domain name is given twice");
        PackedDomain pd;
        pd.name = d.name;
        pd.source = d.path;
        pd.format = detectFormat(d.path, text);
        std::vector<std::vector<int32_t>> docs;
        if (isTextFormat(pd.format)) {
            if (!tokenizer)
                throw RequestError(
                    "tokenizer", "domain '" + d.name + "': " + d.path + " is " + pd.format + " and needs a tokenizer");
            docs = tokenizeDocuments(readTextDocuments(d.path, pd.format, text), *tokenizer, vocabSize);
            if (docs.empty())
                throw InputError(d.path + ": no documents (every document encodes to no token)");
            set.tokenizer = tokenizerDescription;
        } else {
            docs = readInputIdsJsonl(d.path, vocabSize);
        }
        pd.numDocuments = static_cast<int64_t>(docs.size());
        const std::optional<int64_t> cap = d.maxSamples ? d.maxSamples : packing.maxSamplesPerDomain;
        pd.sequences = packDocuments(std::move(docs), packing, cap);
        if (pd.sequences.empty())
            throw RequestError("seqLen",
                d.path + ": domain '" + d.name + "' has fewer tokens than one sequence of "
                    + std::to_string(packing.seqLen) + " tokens");
        set.domains.push_back(std::move(pd));
    }
    return set;
}

} // namespace moeatlas
