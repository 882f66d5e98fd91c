// Internal: the added vocabulary (added_tokens of tokenizer.json). Its tokens are cut out of the
// text before normalization (normalized: false) or right after it (normalized: true), with HF's
// leftmost-longest matching and single_word / lstrip / rstrip rules.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace moeatlas::tok {

struct AddedToken {
    std::string content;
    bool singleWord = false;
    bool lstrip = false;
    bool rstrip = false;
    bool normalized = true;
    bool special = false;
    bool operator==(const AddedToken&) const = default;
};

// A run of text: an added token (id >= 0) or text between added tokens (id < 0).
struct AddedSplit {
    std::size_t start = 0;
    std::size_t end = 0;
    int32_t id = -1;
};

// Leftmost-longest multi-pattern matcher (a byte trie), like aho-corasick's LeftmostLongest.
class TokenTrie {
public:
    void insert(std::string_view pattern, int32_t value);
    bool empty() const { return m_nodes.size() <= 1; }
    // Longest pattern starting at `pos`: its end and value, or false.
    bool longestAt(std::string_view text, std::size_t pos, std::size_t& end, int32_t& value) const;
    // First position >= pos whose byte can start a pattern (text.size() if none).
    std::size_t nextCandidate(std::string_view text, std::size_t pos) const;

private:
    struct Node {
        int32_t value = -1;
    };
    std::vector<Node> m_nodes { Node {} };
    std::array<int32_t, 256> m_root {}; // root transitions (0: none)
    std::unordered_map<uint64_t, int32_t> m_edges; // (node << 8 | byte) -> child
};

class AddedVocabulary {
public:
    // Adds tokens in file order and assigns ids as HF does: an id already known for the content
    // (added or model vocabulary) is reused, else the next id after the model vocabulary.
    template <typename ModelLookup>
    void build(const std::vector<AddedToken>& tokens, ModelLookup modelId, int64_t modelVocabCount);
    // Builds the normalized-token trie with each token's normalized content.
    template <typename Normalize> void buildTries(Normalize normalize);

    void splitRaw(std::string_view text, std::vector<AddedSplit>& out) const { find(text, m_rawTrie, out); }
    void splitNormalized(std::string_view text, std::vector<AddedSplit>& out) const { find(text, m_normTrie, out); }
    bool hasNormalizedTokens() const { return !m_normTrie.empty(); }
    bool hasRawTokens() const { return !m_rawTrie.empty(); }

    const AddedToken* byId(int32_t id) const;
    // The string an id decodes to: the content, normalized for normalized tokens (HF >= 0.20).
    const std::string* decodedContent(int32_t id) const;
    std::optional<int32_t> idOf(std::string_view content) const;
    bool isSpecialContent(std::string_view content) const { return m_specialSet.contains(std::string(content)); }
    int64_t idLimit() const { return m_maxId + 1; }

private:
    void find(std::string_view text, const TokenTrie& trie, std::vector<AddedSplit>& out) const;

    std::unordered_map<std::string, int32_t> m_idOf;
    std::unordered_map<int32_t, AddedToken> m_byId;
    std::unordered_map<int32_t, std::string> m_decoded;
    std::vector<AddedToken> m_special; // order given
    std::vector<AddedToken> m_classic; // non-special, order given
    std::unordered_set<std::string> m_specialSet;
    TokenTrie m_rawTrie, m_normTrie;
    int64_t m_maxId = -1;
    int64_t m_maxAddedMapId = -1;
};

template <typename ModelLookup>
void AddedVocabulary::build(const std::vector<AddedToken>& tokens, ModelLookup modelId, int64_t modelVocabCount)
{
    for (const auto& t : tokens) {
        if (t.special && !t.content.empty() && !m_specialSet.contains(t.content)) {
            m_special.push_back(t);
            m_specialSet.insert(t.content);
        }
    }
    for (const auto& t : tokens) {
        if (t.content.empty())
            continue;
        // an identical token (all flags equal) is ignored; only one with the same content can be
        if (auto it = m_idOf.find(t.content); it != m_idOf.end()) {
            auto existing = m_byId.find(it->second);
            if (existing != m_byId.end() && existing->second == t)
                continue;
        }
        int64_t id = -1;
        if (auto it = m_idOf.find(t.content); it != m_idOf.end()) {
            id = it->second;
        } else if (auto mid = modelId(t.content)) {
            id = *mid;
        } else if (m_idOf.empty()) {
            id = modelVocabCount;
        } else {
            const int64_t mx = m_maxAddedMapId;
            id = (mx >= modelVocabCount || modelVocabCount == 0) ? mx + 1 : modelVocabCount;
        }
        m_maxAddedMapId = std::max(m_maxAddedMapId, id);
        m_idOf[t.content] = static_cast<int32_t>(id);
        m_byId[static_cast<int32_t>(id)] = t;
        m_maxId = std::max(m_maxId, id);
        if (!m_specialSet.contains(t.content))
            m_classic.push_back(t);
    }
}

template <typename Normalize> void AddedVocabulary::buildTries(Normalize normalize)
{
    auto addAll = [&](const std::vector<AddedToken>& list) {
        for (const auto& t : list) {
            const int32_t id = m_idOf.at(t.content);
            if (!t.normalized) {
                m_rawTrie.insert(t.content, id);
            } else {
                const std::string n = normalize(t.content);
                m_decoded[id] = n;
                if (!n.empty())
                    m_normTrie.insert(n, id);
            }
        }
    };
    addAll(m_special);
    addAll(m_classic);
}

} // namespace moeatlas::tok
