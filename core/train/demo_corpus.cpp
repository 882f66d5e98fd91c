#include "train/demo_corpus.h"

#include "util/atomic_file.h"
#include "util/error.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <set>
#include <sstream>

namespace moeatlas {

namespace {

template <std::size_t N> const char* pick(SplitMix64& rng, const std::array<const char*, N>& words)
{
    return words[rng.below(N)];
}

// Lines of correct integer arithmetic: "37+45=82", "9*7=63", "85-23=62", "(4+5)*3=27".
std::string arithDocument(SplitMix64& rng)
{
    std::ostringstream out;
    const int64_t lines = rng.range(6, 14);
    for (int64_t i = 0; i < lines; ++i) {
        if (i)
            out << '\n';
        const auto kind = rng.below(5);
        if (kind == 0 || kind == 1) {
            const int64_t a = rng.range(0, 99), b = rng.range(0, 99);
            out << a << '+' << b << '=' << a + b;
        } else if (kind == 2) {
            int64_t a = rng.range(0, 99), b = rng.range(0, 99);
            if (a < b)
                std::swap(a, b);
            out << a << '-' << b << '=' << a - b;
        } else if (kind == 3) {
            const int64_t a = rng.range(1, 12), b = rng.range(1, 12);
            out << a << '*' << b << '=' << a * b;
        } else {
            const int64_t a = rng.range(1, 9), b = rng.range(1, 9), c = rng.range(2, 9);
            out << '(' << a << '+' << b << ")*" << c << '=' << (a + b) * c;
        }
    }
    return out.str();
}

// A toy language: let / if / while / print with small expressions; blocks indented by two spaces.
constexpr std::array<const char*, 8> kVars = { "x", "y", "n", "i", "total", "count", "acc", "k" };
constexpr std::array<const char*, 6> kCmp = { "<", ">", "<=", ">=", "==", "!=" };
constexpr std::array<const char*, 3> kOps = { "+", "-", "*" };

std::string codeExpr(SplitMix64& rng, const std::vector<std::string>& defined)
{
    auto operand = [&]() -> std::string {
        if (!defined.empty() && rng.below(2) == 0)
            return defined[rng.below(defined.size())];
        return std::to_string(rng.range(0, 20));
    };
    std::string e = operand();
    if (rng.below(3) != 0)
        e += std::string(" ") + pick(rng, kOps) + " " + operand();
    return e;
}

void codeStatements(
    SplitMix64& rng, std::vector<std::string>& defined, int depth, int count, std::ostringstream& out, bool& first)
{
    const std::string indent(static_cast<std::size_t>(depth) * 2, ' ');
    auto line = [&](const std::string& s) {
        if (!first)
            out << '\n';
        first = false;
        out << indent << s;
    };
    for (int i = 0; i < count; ++i) {
        const auto kind = defined.empty() ? 0 : rng.below(depth < 2 ? 6 : 4);
        if (kind == 0 || kind == 1) {
            const std::string v = pick(rng, kVars);
            const bool known = std::find(defined.begin(), defined.end(), v) != defined.end();
            line((known ? "" : "let ") + v + " = " + codeExpr(rng, defined) + ";");
            if (!known)
                defined.push_back(v);
        } else if (kind == 2 || kind == 3) {
            line("print " + codeExpr(rng, defined) + ";");
        } else {
            const std::string& v = defined[rng.below(defined.size())];
            const bool loop = kind == 5;
            line(std::string(loop ? "while " : "if ") + v + " " + pick(rng, kCmp) + " "
                + std::to_string(rng.range(0, 50)) + " {");
            std::vector<std::string> inner = defined;
            codeStatements(rng, inner, depth + 1, static_cast<int>(rng.range(1, 3)), out, first);
            if (loop)
                line("  " + v + " = " + v + " + " + std::to_string(rng.range(1, 5)) + ";");
            line("}");
        }
    }
}

std::string codeDocument(SplitMix64& rng)
{
    std::ostringstream out;
    std::vector<std::string> defined;
    bool first = true;
    codeStatements(rng, defined, 0, static_cast<int>(rng.range(4, 9)), out, first);
    return out.str();
}

// JSON records, one per line, with a few keys and typed values.
constexpr std::array<const char*, 12> kNames
    = { "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar" };
constexpr std::array<const char*, 8> kCities
    = { "paris", "berlin", "tokyo", "lima", "oslo", "cairo", "delhi", "quito" };
constexpr std::array<const char*, 6> kTags = { "red", "blue", "green", "new", "vip", "test" };

std::string jsonDocument(SplitMix64& rng)
{
    std::ostringstream out;
    const int64_t records = rng.range(3, 6);
    int64_t id = rng.range(1, 9000);
    for (int64_t r = 0; r < records; ++r) {
        if (r)
            out << '\n';
        out << "{\"id\": " << id << ", \"name\": \"" << pick(rng, kNames) << "\", \"age\": " << rng.range(18, 90);
        id += rng.range(1, 9);
        if (rng.below(2))
            out << ", \"city\": \"" << pick(rng, kCities) << '"';
        out << ", \"active\": " << (rng.below(2) ? "true" : "false");
        if (rng.below(2))
            out << ", \"score\": " << rng.range(0, 99) << '.' << rng.range(0, 9);
        if (rng.below(3) == 0) {
            out << ", \"tags\": [";
            const int64_t n = rng.range(1, 3);
            for (int64_t t = 0; t < n; ++t)
                out << (t ? ", " : "") << '"' << pick(rng, kTags) << '"';
            out << ']';
        }
        if (rng.below(5) == 0)
            out << ", \"manager\": null";
        out << '}';
    }
    return out.str();
}

// Templated English sentences from word lists.
constexpr std::array<const char*, 10> kAdj
    = { "old", "quiet", "small", "bright", "lazy", "brave", "gentle", "curious", "tired", "happy" };
constexpr std::array<const char*, 12> kNoun
    = { "cat", "farmer", "child", "teacher", "dog", "sailor", "bird", "painter", "king", "miller", "fox", "girl" };
constexpr std::array<const char*, 10> kVerb
    = { "walked", "ran", "looked", "sang", "waited", "slept", "danced", "wandered", "smiled", "hurried" };
constexpr std::array<const char*, 8> kAdv
    = { "slowly", "quietly", "happily", "often", "again", "early", "alone", "together" };
constexpr std::array<const char*, 10> kPlace = { "the river", "the market", "the old mill", "the forest", "the village",
    "the hill", "the harbour", "the garden", "the castle", "the bridge" };
constexpr std::array<const char*, 6> kTime
    = { "In the morning", "At night", "One day", "Later", "After the rain", "In winter" };

std::string capitalised(std::string s)
{
    if (!s.empty() && s[0] >= 'a' && s[0] <= 'z')
        s[0] = static_cast<char>(s[0] - 'a' + 'A');
    return s;
}

std::string proseSentence(SplitMix64& rng)
{
    const std::string subject = std::string("the ") + pick(rng, kAdj) + " " + pick(rng, kNoun);
    switch (rng.below(4)) {
    case 0:
        return capitalised(subject) + " " + pick(rng, kVerb) + " " + pick(rng, kAdv) + " to " + pick(rng, kPlace) + ".";
    case 1:
        return std::string(pick(rng, kTime)) + ", " + subject + " " + pick(rng, kVerb) + " near " + pick(rng, kPlace)
            + ".";
    case 2:
        return capitalised(subject) + " and the " + pick(rng, kNoun) + " " + pick(rng, kVerb) + " " + pick(rng, kAdv)
            + ".";
    default:
        return "When the " + std::string(pick(rng, kNoun)) + " " + pick(rng, kVerb) + ", " + subject + " "
            + pick(rng, kVerb) + " " + pick(rng, kAdv) + ".";
    }
}

std::string proseDocument(SplitMix64& rng)
{
    std::ostringstream out;
    const int64_t sentences = rng.range(3, 7);
    for (int64_t s = 0; s < sentences; ++s) {
        if (s)
            out << (rng.below(3) == 0 ? '\n' : ' ');
        out << proseSentence(rng);
    }
    return out.str();
}

} // namespace

const std::vector<std::string>& demoDomains()
{
    static const std::vector<std::string> domains = { "arith", "code", "json", "prose" };
    return domains;
}

const std::vector<std::string>& demoSplits()
{
    static const std::vector<std::string> splits = { "train", "calibration", "heldout" };
    return splits;
}

std::string generateDemoDocument(const std::string& domain, SplitMix64& rng)
{
    if (domain == "arith")
        return arithDocument(rng);
    if (domain == "code")
        return codeDocument(rng);
    if (domain == "json")
        return jsonDocument(rng);
    if (domain == "prose")
        return proseDocument(rng);
    throw InputError("unknown demo domain '" + domain + "' (expected arith, code, json or prose)");
}

std::vector<std::vector<std::vector<std::string>>> generateDemoCorpus(const DemoCorpusOptions& o)
{
    if (o.trainDocs < 1 || o.calibrationDocs < 1 || o.heldoutDocs < 1)
        throw InputError("demo corpus: every split needs at least one document per domain");
    const std::vector<int> counts = { o.trainDocs, o.calibrationDocs, o.heldoutDocs };
    const auto& domains = demoDomains();
    std::vector<std::vector<std::vector<std::string>>> docs(
        counts.size(), std::vector<std::vector<std::string>>(domains.size()));
    for (std::size_t d = 0; d < domains.size(); ++d) {
        // One stream per domain, so adding documents to one domain leaves the others unchanged.
        SplitMix64 rng(o.seed * 0x100000001b3ull + d + 1);
        std::set<std::string> seen;
        for (std::size_t s = 0; s < counts.size(); ++s) {
            for (int i = 0; i < counts[s]; ++i) {
                for (int attempt = 0;; ++attempt) {
                    std::string doc = generateDemoDocument(domains[d], rng);
                    if (seen.insert(doc).second) {
                        docs[s][d].push_back(std::move(doc));
                        break;
                    }
                    if (attempt > 1000)
                        throw Error("demo corpus: cannot draw enough distinct " + domains[d] + " documents");
                }
            }
        }
    }
    return docs;
}

std::vector<std::filesystem::path> writeDemoCorpus(const DemoCorpusOptions& o, const std::filesystem::path& dir)
{
    const auto docs = generateDemoCorpus(o);
    std::vector<std::filesystem::path> written;
    for (std::size_t s = 0; s < demoSplits().size(); ++s) {
        const std::filesystem::path sub = dir / demoSplits()[s];
        std::error_code ec;
        std::filesystem::create_directories(sub, ec);
        if (ec)
            throw InputError(sub.string() + ": cannot create directory: " + ec.message());
        for (std::size_t d = 0; d < demoDomains().size(); ++d) {
            std::string text;
            for (const std::string& doc : docs[s][d])
                text += (text.empty() ? "" : "\n") + doc + "\n";
            const auto path = sub / (demoDomains()[d] + ".txt");
            writeFileAtomically(path, text);
            written.push_back(path);
        }
    }
    return written;
}

std::vector<std::string> readDemoDocuments(const std::filesystem::path& file)
{
    std::ifstream in(file, std::ios::binary);
    if (!in)
        throw InputError(file.string() + ": cannot open");
    std::vector<std::string> docs;
    std::string line, current;
    auto flush = [&] {
        if (!current.empty())
            docs.push_back(current);
        current.clear();
    };
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        if (line.find_first_not_of(" \t\r\f\v") == std::string::npos) {
            flush();
            continue;
        }
        current += (current.empty() ? "" : "\n") + line;
    }
    flush();
    if (docs.empty())
        throw InputError(file.string() + ": no documents");
    return docs;
}

} // namespace moeatlas
