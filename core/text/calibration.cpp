#include "text/calibration.h"

#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

namespace moeatlas {

int64_t CalibrationSet::totalTokens() const
{
    int64_t n = 0;
    for (const PackedDomain& d : domains)
        for (const auto& s : d.sequences)
            n += static_cast<int64_t>(s.size());
    return n;
}

std::string CalibrationSet::describePacking() const
{
    std::ostringstream s;
    s << "documents shuffled with seed " << packing.seed << ", concatenated per domain"
      << (packing.bosToken ? " with BOS " + std::to_string(*packing.bosToken) + " before each document" : "")
      << ", cut into sequences of " << packing.seqLen << " tokens"
      << (packing.dropRemainder ? ", last partial sequence dropped" : "")
      << "; domains never share a sequence";
    return s.str();
}

DomainSource parseDomainArgument(const std::string& arg)
{
    const auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
        throw InputError("--domain '" + arg + "': expected NAME=PATH or NAME=PATH:N");
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
            throw InputError("--domain '" + arg + "': the sample cap must be > 0");
    }
    for (char c : d.name)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
            throw InputError("--domain '" + arg + "': domain names use letters, digits, '_', '-', '.'");
    return d;
}

std::vector<std::vector<int32_t>> readInputIdsJsonl(const std::string& path, int64_t vocabSize)
{
    std::ifstream in(path);
    if (!in)
        throw InputError(path + ": cannot open calibration file");
    std::vector<std::vector<int32_t>> docs;
    std::string line;
    int64_t lineNo = 0;
    while (std::getline(in, line)) {
        ++lineNo;
        if (line.find_first_not_of(" \t\r") == std::string::npos)
            continue;
        const std::string where = path + ":" + std::to_string(lineNo);
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
            throw InputError(where + ": invalid JSON (" + e.what() + ")");
        }
        if (!j.is_object() || !j.contains("input_ids") || !j.at("input_ids").is_array())
            throw InputError(where + ": expected an object with an \"input_ids\" array of integers");
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
    }
    if (docs.empty())
        throw InputError(path + ": no documents (the file is empty or every input_ids list is empty)");
    return docs;
}

std::vector<std::vector<int32_t>> packDocuments(std::vector<std::vector<int32_t>> documents,
                                                const PackingOptions& options, std::optional<int64_t> maxSequences)
{
    if (options.seqLen <= 0)
        throw InputError("--seq-len must be > 0");
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

} // namespace moeatlas
