#include "tokenizer_added.h"

#include "tokenizer_unicode.h"

namespace moeatlas::tok {

void TokenTrie::insert(std::string_view pattern, int32_t value)
{
    int32_t node = 0;
    for (char ch : pattern) {
        const auto b = static_cast<unsigned char>(ch);
        int32_t child = 0;
        if (node == 0) {
            child = m_root[b];
        } else if (auto it = m_edges.find((static_cast<uint64_t>(node) << 8) | b); it != m_edges.end()) {
            child = it->second;
        }
        if (child == 0) {
            child = static_cast<int32_t>(m_nodes.size());
            m_nodes.push_back(Node {});
            if (node == 0)
                m_root[b] = child;
            else
                m_edges[(static_cast<uint64_t>(node) << 8) | b] = child;
        }
        node = child;
    }
    if (node != 0 && m_nodes[static_cast<std::size_t>(node)].value < 0)
        m_nodes[static_cast<std::size_t>(node)].value = value; // the first of equal patterns wins
}

bool TokenTrie::longestAt(std::string_view text, std::size_t pos, std::size_t& end, int32_t& value) const
{
    bool found = false;
    int32_t node = 0;
    for (std::size_t i = pos; i < text.size(); ++i) {
        const auto b = static_cast<unsigned char>(text[i]);
        if (node == 0) {
            node = m_root[b];
        } else {
            auto it = m_edges.find((static_cast<uint64_t>(node) << 8) | b);
            node = it == m_edges.end() ? 0 : it->second;
        }
        if (node == 0)
            break;
        if (m_nodes[static_cast<std::size_t>(node)].value >= 0) {
            found = true;
            end = i + 1;
            value = m_nodes[static_cast<std::size_t>(node)].value;
        }
    }
    return found;
}

std::size_t TokenTrie::nextCandidate(std::string_view text, std::size_t pos) const
{
    while (pos < text.size() && m_root[static_cast<unsigned char>(text[pos])] == 0)
        ++pos;
    return pos;
}

namespace {

char32_t lastChar(std::string_view s)
{
    std::size_t i = s.size() - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80)
        --i;
    char32_t cp = 0;
    utf8Decode(s, i, cp);
    return cp;
}

} // namespace

const AddedToken* AddedVocabulary::byId(int32_t id) const
{
    auto it = m_byId.find(id);
    return it == m_byId.end() ? nullptr : &it->second;
}

const std::string* AddedVocabulary::decodedContent(int32_t id) const
{
    if (auto it = m_decoded.find(id); it != m_decoded.end())
        return &it->second;
    const AddedToken* t = byId(id);
    return t ? &t->content : nullptr;
}

std::optional<int32_t> AddedVocabulary::idOf(std::string_view content) const
{
    auto it = m_idOf.find(std::string(content));
    if (it == m_idOf.end())
        return std::nullopt;
    return it->second;
}

void AddedVocabulary::find(std::string_view text, const TokenTrie& trie, std::vector<AddedSplit>& out) const
{
    out.clear();
    if (text.empty() || trie.empty()) {
        out.push_back({ 0, text.size(), -1 });
        return;
    }
    std::size_t startOffset = 0;
    std::size_t pos = 0;
    while (true) {
        pos = trie.nextCandidate(text, pos);
        if (pos >= text.size())
            break;
        std::size_t matchEnd = 0;
        int32_t id = -1;
        if (!trie.longestAt(text, pos, matchEnd, id)) {
            ++pos;
            continue;
        }
        std::size_t start = pos, stop = matchEnd;
        pos = matchEnd; // matching resumes after the raw match, whatever lstrip/rstrip take
        const AddedToken& token = m_byId.at(id);
        if (token.singleWord) {
            const bool startSpace = start == 0 || !isWordChar(lastChar(text.substr(0, start)));
            bool stopSpace = stop == text.size();
            if (!stopSpace) {
                char32_t cp = 0;
                utf8Decode(text, stop, cp);
                stopSpace = !isWordChar(cp);
            }
            if (!startSpace || !stopSpace)
                continue;
        }
        if (token.lstrip) {
            std::size_t s = start;
            while (s > 0) {
                std::size_t k = s - 1;
                while (k > 0 && (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80)
                    --k;
                char32_t cp = 0;
                utf8Decode(text, k, cp);
                if (!isWhitespace(cp))
                    break;
                s = k;
            }
            start = std::max(s, startOffset);
        }
        if (token.rstrip) {
            while (stop < text.size()) {
                char32_t cp = 0;
                const std::size_t n = utf8Decode(text, stop, cp);
                if (!isWhitespace(cp))
                    break;
                stop += n;
            }
        }
        // A previous rstrip can have swallowed the start of this match; never overlap it.
        start = std::max(start, startOffset);
        if (stop < start)
            stop = start;
        if (startOffset < start)
            out.push_back({ startOffset, start, -1 });
        out.push_back({ start, stop, id });
        startOffset = stop;
    }
    if (startOffset != text.size())
        out.push_back({ startOffset, text.size(), -1 });
}

} // namespace moeatlas::tok
