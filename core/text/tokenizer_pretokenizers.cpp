#include "tokenizer_pretokenizers.h"

#include "tokenizer_unicode.h"

#include <algorithm>
#include <stdexcept>

namespace moeatlas::tok {

namespace {

// GPT-2's pre-tokenization regex, used by ByteLevel when use_regex is set.
const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

template <typename Pred> void charSpans(std::string_view text, Pred pred, std::vector<Span>& out)
{
    if (text.empty()) {
        out.push_back({ 0, 0, false });
        return;
    }
    std::size_t last = 0;
    for (std::size_t i = 0; i < text.size();) {
        char32_t cp = 0;
        const std::size_t n = utf8Decode(text, i, cp);
        if (pred(cp)) {
            if (last < i)
                out.push_back({ last, i, false });
            out.push_back({ i, i + n, true });
            last = i + n;
        }
        i += n;
    }
    if (last < text.size())
        out.push_back({ last, text.size(), false });
}

std::string byteLevelMap(std::string_view text)
{
    const auto& alphabet = byteLevelAlphabet();
    std::string out;
    out.reserve(text.size() * 2);
    for (char c : text)
        out += alphabet[static_cast<unsigned char>(c)];
    return out;
}

class ByteLevelPreTokenizer final : public PreTokenizer {
public:
    ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex)
        : m_addPrefixSpace(addPrefixSpace)
    {
        if (useRegex)
            m_regex = std::make_unique<Regex>(kGpt2Pattern);
    }
    void split(Piece&& in, std::vector<Piece>& out) const override
    {
        if (m_addPrefixSpace && !in.text.empty() && in.text[0] != ' ')
            in.text.insert(0, 1, ' ');
        if (!m_regex) {
            if (!in.text.empty())
                out.push_back({ byteLevelMap(in.text), in.atStart });
            return;
        }
        thread_local std::vector<std::pair<std::size_t, std::size_t>> matches;
        matches.clear();
        m_regex->findAll(in.text, matches);
        // Isolated: matches and the gaps between them are all pieces of their own.
        std::size_t prev = 0;
        const std::string_view text = in.text;
        for (const auto& [s, e] : matches) {
            if (prev < s)
                out.push_back({ byteLevelMap(text.substr(prev, s - prev)), in.atStart && prev == 0 });
            if (s < e)
                out.push_back({ byteLevelMap(text.substr(s, e - s)), in.atStart && s == 0 });
            prev = e;
        }
        if (prev < text.size())
            out.push_back({ byteLevelMap(text.substr(prev)), in.atStart && prev == 0 });
    }

private:
    bool m_addPrefixSpace;
    std::unique_ptr<Regex> m_regex;
};

class SplitPreTokenizer final : public PreTokenizer {
public:
    SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
        : m_pattern(std::move(pattern))
        , m_behavior(behavior)
        , m_invert(invert)
    {
    }
    void split(Piece&& in, std::vector<Piece>& out) const override
    {
        thread_local std::vector<Span> spans;
        spans.clear();
        m_pattern.findSpans(in.text, spans);
        if (m_invert)
            for (auto& s : spans)
                s.isMatch = !s.isMatch;
        splitBySpans(in.text, spans, m_behavior, in.atStart, out);
    }

private:
    Pattern m_pattern;
    SplitBehavior m_behavior;
    bool m_invert;
};

// Splits on the characters `Pred` accepts (Digits, Punctuation, WhitespaceSplit, CharDelimiterSplit).
template <typename Pred> class CharSplitPreTokenizer final : public PreTokenizer {
public:
    CharSplitPreTokenizer(Pred pred, SplitBehavior behavior)
        : m_pred(std::move(pred))
        , m_behavior(behavior)
    {
    }
    void split(Piece&& in, std::vector<Piece>& out) const override
    {
        thread_local std::vector<Span> spans;
        spans.clear();
        charSpans(in.text, m_pred, spans);
        splitBySpans(in.text, spans, m_behavior, in.atStart, out);
    }

private:
    Pred m_pred;
    SplitBehavior m_behavior;
};

template <typename Pred> std::unique_ptr<PreTokenizer> makeCharSplit(Pred pred, SplitBehavior behavior)
{
    return std::make_unique<CharSplitPreTokenizer<Pred>>(std::move(pred), behavior);
}

enum class PrependScheme { First, Always, Never };

class MetaspacePreTokenizer final : public PreTokenizer {
public:
    MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
        : m_replacement(std::move(replacement))
        , m_scheme(scheme)
        , m_split(split)
    {
        utf8Decode(m_replacement, 0, m_replacementChar);
    }
    void split(Piece&& in, std::vector<Piece>& out) const override
    {
        std::string text;
        text.reserve(in.text.size() + 8);
        for (char c : in.text) {
            if (c == ' ')
                text += m_replacement;
            else
                text += c;
        }
        const bool prepend = m_scheme == PrependScheme::Always || (m_scheme == PrependScheme::First && in.atStart);
        if (prepend && !text.empty() && text.compare(0, m_replacement.size(), m_replacement) != 0)
            text.insert(0, m_replacement);
        if (!m_split) {
            if (!text.empty())
                out.push_back({ std::move(text), in.atStart });
            return;
        }
        thread_local std::vector<Span> spans;
        spans.clear();
        const char32_t r = m_replacementChar;
        charSpans(
            text, [r](char32_t c) { return c == r; }, spans);
        splitBySpans(text, spans, SplitBehavior::MergedWithNext, in.atStart, out);
    }

private:
    std::string m_replacement;
    char32_t m_replacementChar = 0;
    PrependScheme m_scheme;
    bool m_split;
};

class SequencePreTokenizer final : public PreTokenizer {
public:
    explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
        : m_parts(std::move(parts))
    {
    }
    void split(Piece&& in, std::vector<Piece>& out) const override
    {
        std::vector<Piece> pieces;
        pieces.push_back(std::move(in));
        for (const auto& p : m_parts)
            p->apply(pieces);
        for (auto& piece : pieces)
            out.push_back(std::move(piece));
    }

private:
    std::vector<std::unique_ptr<PreTokenizer>> m_parts;
};

SplitBehavior parseBehavior(const Json& node, const JsonPath& path)
{
    const std::string b = getString(node, "behavior", path);
    if (b == "Removed")
        return SplitBehavior::Removed;
    if (b == "Isolated")
        return SplitBehavior::Isolated;
    if (b == "MergedWithPrevious")
        return SplitBehavior::MergedWithPrevious;
    if (b == "MergedWithNext")
        return SplitBehavior::MergedWithNext;
    if (b == "Contiguous")
        return SplitBehavior::Contiguous;
    (path / "behavior").fail("unsupported split behavior \"" + b + "\"");
}

} // namespace

const std::array<std::string, 256>& byteLevelAlphabet()
{
    static const std::array<std::string, 256> table = [] {
        std::array<std::string, 256> t;
        int next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            appendUtf8(t[b], static_cast<char32_t>(printable ? b : next++));
        }
        return t;
    }();
    return table;
}

void splitBySpans(
    std::string_view text, std::vector<Span>& spans, SplitBehavior behavior, bool atStart, std::vector<Piece>& out)
{
    // Fold the spans per behavior exactly as HF does, then drop removed and empty pieces.
    thread_local std::vector<std::pair<Span, bool>> cuts; // (offsets, removed)
    cuts.clear();
    switch (behavior) {
    case SplitBehavior::Isolated:
        for (const auto& s : spans)
            cuts.emplace_back(s, false);
        break;
    case SplitBehavior::Removed:
        for (const auto& s : spans)
            cuts.emplace_back(s, s.isMatch);
        break;
    case SplitBehavior::Contiguous: {
        bool previous = false;
        for (const auto& s : spans) {
            if (s.isMatch == previous && !cuts.empty())
                cuts.back().first.end = s.end;
            else
                cuts.emplace_back(s, false);
            previous = s.isMatch;
        }
        break;
    }
    case SplitBehavior::MergedWithPrevious: {
        bool previous = false;
        for (const auto& s : spans) {
            if (s.isMatch && !previous && !cuts.empty())
                cuts.back().first.end = s.end;
            else
                cuts.emplace_back(s, false);
            previous = s.isMatch;
        }
        break;
    }
    case SplitBehavior::MergedWithNext: {
        bool previous = false;
        for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
            if (it->isMatch && !previous && !cuts.empty())
                cuts.back().first.start = it->start;
            else
                cuts.emplace_back(*it, false);
            previous = it->isMatch;
        }
        std::reverse(cuts.begin(), cuts.end());
        break;
    }
    }
    for (const auto& [s, removed] : cuts) {
        if (removed || s.start == s.end)
            continue;
        out.push_back({ std::string(text.substr(s.start, s.end - s.start)), atStart && s.start == 0 });
    }
}

void PreTokenizer::apply(std::vector<Piece>& pieces) const
{
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (auto& p : pieces)
        split(std::move(p), out);
    pieces.swap(out);
}

std::unique_ptr<PreTokenizer> makePreTokenizer(const Json& node, const JsonPath& path)
{
    if (node.is_null())
        return nullptr;
    const std::string type = componentType(node, path);
    if (type == "ByteLevel")
        return std::make_unique<ByteLevelPreTokenizer>(
            getBoolOr(node, "add_prefix_space", true, path), getBoolOr(node, "use_regex", true, path));
    if (type == "Split") {
        return std::make_unique<SplitPreTokenizer>(parsePattern(member(node, "pattern", path), path / "pattern"),
            parseBehavior(node, path), getBoolOr(node, "invert", false, path));
    }
    if (type == "Digits") {
        const bool individual = getBoolOr(node, "individual_digits", false, path);
        return makeCharSplit(
            [](char32_t c) { return isNumeric(c); }, individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
    }
    if (type == "Punctuation") {
        const SplitBehavior b = node.contains("behavior") ? parseBehavior(node, path) : SplitBehavior::Isolated;
        return makeCharSplit([](char32_t c) { return isPunctuation(c); }, b);
    }
    if (type == "WhitespaceSplit")
        return makeCharSplit([](char32_t c) { return isWhitespace(c); }, SplitBehavior::Removed);
    if (type == "CharDelimiterSplit") {
        const std::string d = getSingleChar(node, "delimiter", path);
        char32_t delim = 0;
        utf8Decode(d, 0, delim);
        return makeCharSplit([delim](char32_t c) { return c == delim; }, SplitBehavior::Removed);
    }
    if (type == "Metaspace") {
        const std::string replacement = getSingleChar(node, "replacement", path);
        PrependScheme scheme = PrependScheme::Always;
        if (node.contains("prepend_scheme") && !node["prepend_scheme"].is_null()) {
            const std::string s = getString(node, "prepend_scheme", path);
            if (s == "first")
                scheme = PrependScheme::First;
            else if (s == "always")
                scheme = PrependScheme::Always;
            else if (s == "never")
                scheme = PrependScheme::Never;
            else
                (path / "prepend_scheme").fail("unsupported prepend_scheme \"" + s + "\"");
        } else {
            // files older than prepend_scheme carry add_prefix_space
            scheme = getBoolOr(node, "add_prefix_space", true, path) ? PrependScheme::Always : PrependScheme::Never;
        }
        return std::make_unique<MetaspacePreTokenizer>(replacement, scheme, getBoolOr(node, "split", true, path));
    }
    if (type == "Sequence") {
        const Json& list = getArray(node, "pretokenizers", path);
        std::vector<std::unique_ptr<PreTokenizer>> parts;
        for (std::size_t i = 0; i < list.size(); ++i) {
            auto part = makePreTokenizer(list[i], (path / "pretokenizers")[i]);
            if (!part)
                (path / "pretokenizers")[i].fail("expected a pre-tokenizer, got null");
            parts.push_back(std::move(part));
        }
        return std::make_unique<SequencePreTokenizer>(std::move(parts));
    }
    (path / "type").fail("unsupported pre-tokenizer type \"" + type + "\"");
}

} // namespace moeatlas::tok
