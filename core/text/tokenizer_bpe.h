// Internal: the BPE model of tokenizer.json ("model": {"type": "BPE", ...}). Words are merged with
// a priority queue over a linked list of symbols (rank order, leftmost first, as HF), and merged
// words are cached.
#pragma once

#include "tokenizer_json.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace moeatlas::tok {

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view> {}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
public:
    static std::unique_ptr<BpeModel> fromJson(const Json& node, const JsonPath& path);

    // Appends the ids of one pre-tokenized word.
    void tokenize(std::string_view word, std::vector<int32_t>& out) const;

    std::optional<int32_t> tokenToId(std::string_view token) const;
    const std::string* idToToken(int32_t id) const;
    // One past the largest id.
    int64_t idLimit() const { return static_cast<int64_t>(m_idToToken.size()); }
    // Number of vocabulary entries (HF's get_vocab_size, which numbers new added tokens).
    int64_t vocabCount() const { return static_cast<int64_t>(m_vocab.size()); }

private:
    struct MergeValue {
        int32_t rank;
        int32_t newId;
    };
    // Open addressing over (left id, right id) pairs: the merge lookup is the hot loop.
    class MergeTable {
    public:
        void reserve(std::size_t n);
        void insert(uint64_t key, MergeValue value);
        const MergeValue* find(uint64_t key) const;

    private:
        std::vector<uint64_t> m_keys;
        std::vector<MergeValue> m_values;
        std::size_t m_mask = 0;
        std::size_t m_size = 0;
    };

    void mergeWord(std::string_view word, std::vector<int32_t>& out) const;
    int32_t symbolId(std::string_view s, bool first, bool last) const;

    TokenMap m_vocab;
    std::vector<std::string> m_idToToken;
    std::vector<bool> m_hasId;
    MergeTable m_merges;
    std::optional<std::string> m_unkToken;
    std::string m_prefix; // continuing_subword_prefix
    std::string m_suffix; // end_of_word_suffix
    bool m_fuseUnk = false;
    bool m_byteFallback = false;
    bool m_ignoreMerges = false;
    std::vector<int32_t> m_byteFallbackIds; // id of "<0xXX>" per byte, -1 when absent
    std::vector<int32_t> m_smallCharIds; // id per code point below 0x800 (-1: none), no prefix/suffix

    // Word cache. try_lock keeps concurrent encoders from queueing on it.
    mutable std::mutex m_cacheMutex;
    mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> m_cache;
};

} // namespace moeatlas::tok
