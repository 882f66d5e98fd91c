#include "tokenizer_bpe.h"

#include "tokenizer_unicode.h"

#include <algorithm>
#include <cstdio>

namespace moeatlas::tok {

namespace {

constexpr std::size_t kCacheMaxWordBytes = 256; // HF caches only words shorter than this
constexpr std::size_t kCacheCapacity = 200000;
constexpr int64_t kMaxTokenId = (int64_t(1) << 26); // guards the id tables against absurd ids

uint64_t pairKey(int32_t a, int32_t b)
{
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

uint64_t mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

constexpr uint64_t kEmptyKey = ~uint64_t(0);

} // namespace

void BpeModel::MergeTable::reserve(std::size_t n)
{
    std::size_t cap = 16;
    while (cap < n * 2)
        cap <<= 1;
    m_keys.assign(cap, kEmptyKey);
    m_values.assign(cap, MergeValue { 0, 0 });
    m_mask = cap - 1;
    m_size = 0;
}

void BpeModel::MergeTable::insert(uint64_t key, MergeValue value)
{
    if ((m_size + 1) * 2 > m_keys.size()) {
        std::vector<uint64_t> keys = std::move(m_keys);
        std::vector<MergeValue> values = std::move(m_values);
        reserve(std::max<std::size_t>(keys.size(), 8));
        for (std::size_t i = 0; i < keys.size(); ++i)
            if (keys[i] != kEmptyKey)
                insert(keys[i], values[i]);
    }
    std::size_t slot = mix(key) & m_mask;
    while (m_keys[slot] != kEmptyKey && m_keys[slot] != key)
        slot = (slot + 1) & m_mask;
    if (m_keys[slot] == kEmptyKey)
        ++m_size;
    m_keys[slot] = key;
    m_values[slot] = value; // a later duplicate merge overwrites, as HF's HashMap collect does
}

const BpeModel::MergeValue* BpeModel::MergeTable::find(uint64_t key) const
{
    if (m_keys.empty())
        return nullptr;
    std::size_t slot = mix(key) & m_mask;
    while (true) {
        const uint64_t k = m_keys[slot];
        if (k == key)
            return &m_values[slot];
        if (k == kEmptyKey)
            return nullptr;
        slot = (slot + 1) & m_mask;
    }
}

std::unique_ptr<BpeModel> BpeModel::fromJson(const Json& node, const JsonPath& path)
{
    if (!node.is_object())
        path.fail("expected the model object");
    const std::string type = node.contains("type") ? getString(node, "type", path) : std::string("BPE");
    if (type != "BPE")
        (path / "type").fail("unsupported model type \"" + type + "\" (only BPE is implemented)");
    if (node.contains("dropout") && !node["dropout"].is_null()) {
        const Json& d = node["dropout"];
        if (!d.is_number() || d.get<double>() != 0.0)
            (path / "dropout").fail("BPE dropout is not supported (it makes encoding random)");
    }

    auto model = std::unique_ptr<BpeModel>(new BpeModel());
    const Json& vocab = member(node, "vocab", path);
    if (!vocab.is_object())
        (path / "vocab").fail("expected an object of token -> id");
    int64_t maxId = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        if (!it.value().is_number_integer())
            (path / "vocab").fail("id of token \"" + it.key() + "\" is not an integer");
        const int64_t id = it.value().get<int64_t>();
        if (id < 0 || id >= kMaxTokenId)
            (path / "vocab").fail("id " + std::to_string(id) + " of token \"" + it.key() + "\" is out of range");
        model->m_vocab[it.key()] = static_cast<int32_t>(id);
        maxId = std::max(maxId, id);
    }
    model->m_idToToken.resize(static_cast<std::size_t>(maxId + 1));
    model->m_hasId.assign(static_cast<std::size_t>(maxId + 1), false);
    for (const auto& [token, id] : model->m_vocab) {
        model->m_idToToken[static_cast<std::size_t>(id)] = token;
        model->m_hasId[static_cast<std::size_t>(id)] = true;
    }

    if (node.contains("unk_token") && !node["unk_token"].is_null())
        model->m_unkToken = getString(node, "unk_token", path);
    model->m_prefix = getStringOr(node, "continuing_subword_prefix", "", path);
    model->m_suffix = getStringOr(node, "end_of_word_suffix", "", path);
    model->m_fuseUnk = getBoolOr(node, "fuse_unk", false, path);
    model->m_byteFallback = getBoolOr(node, "byte_fallback", false, path);
    model->m_ignoreMerges = getBoolOr(node, "ignore_merges", false, path);

    const Json& merges = getArray(node, "merges", path);
    model->m_merges.reserve(merges.size());
    const std::size_t prefixLen = model->m_prefix.size();
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
        const Json& m = merges[rank];
        const JsonPath here = (path / "merges")[rank];
        std::string a, b;
        if (m.is_string()) {
            const std::string line = m.get<std::string>();
            const auto space = line.find(' ');
            if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
                here.fail("expected \"left right\" with exactly one space");
            a = line.substr(0, space);
            b = line.substr(space + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            a = m[0].get<std::string>();
            b = m[1].get<std::string>();
        } else {
            here.fail("expected a merge as \"left right\" or [\"left\", \"right\"]");
        }
        auto ia = model->m_vocab.find(a), ib = model->m_vocab.find(b);
        if (ia == model->m_vocab.end())
            here.fail("merge token \"" + a + "\" is not in the vocabulary");
        if (ib == model->m_vocab.end())
            here.fail("merge token \"" + b + "\" is not in the vocabulary");
        if (b.size() < prefixLen)
            here.fail("merge token \"" + b + "\" is shorter than continuing_subword_prefix");
        const std::string merged = a + b.substr(prefixLen);
        auto im = model->m_vocab.find(merged);
        if (im == model->m_vocab.end())
            here.fail("merged token \"" + merged + "\" is not in the vocabulary");
        model->m_merges.insert(pairKey(ia->second, ib->second), { static_cast<int32_t>(rank), im->second });
    }

    if (model->m_byteFallback) {
        model->m_byteFallbackIds.assign(256, -1);
        for (int b = 0; b < 256; ++b) {
            char name[8];
            std::snprintf(name, sizeof name, "<0x%02X>", b);
            if (auto it = model->m_vocab.find(std::string_view(name)); it != model->m_vocab.end())
                model->m_byteFallbackIds[static_cast<std::size_t>(b)] = it->second;
        }
    }
    if (model->m_prefix.empty() && model->m_suffix.empty()) {
        model->m_smallCharIds.assign(0x800, -1);
        std::string s;
        for (char32_t cp = 0; cp < 0x800; ++cp) {
            s.clear();
            appendUtf8(s, cp);
            if (auto it = model->m_vocab.find(s); it != model->m_vocab.end())
                model->m_smallCharIds[cp] = it->second;
        }
    }
    if (model->m_unkToken && !model->m_vocab.contains(*model->m_unkToken))
        (path / "unk_token").fail("unk_token \"" + *model->m_unkToken + "\" is not in the vocabulary");
    return model;
}

std::optional<int32_t> BpeModel::tokenToId(std::string_view token) const
{
    auto it = m_vocab.find(token);
    if (it == m_vocab.end())
        return std::nullopt;
    return it->second;
}

const std::string* BpeModel::idToToken(int32_t id) const
{
    if (id < 0 || static_cast<std::size_t>(id) >= m_idToToken.size() || !m_hasId[static_cast<std::size_t>(id)])
        return nullptr;
    return &m_idToToken[static_cast<std::size_t>(id)];
}

int32_t BpeModel::symbolId(std::string_view s, bool first, bool last) const
{
    if (m_prefix.empty() && m_suffix.empty()) {
        const auto b0 = static_cast<unsigned char>(s[0]);
        if (s.size() == 1)
            return m_smallCharIds[b0];
        if (s.size() == 2 && b0 < 0xE0) {
            char32_t cp = 0;
            utf8Decode(s, 0, cp);
            return m_smallCharIds[cp];
        }
        auto it = m_vocab.find(s);
        return it == m_vocab.end() ? -1 : it->second;
    }
    std::string key;
    if (!first)
        key += m_prefix;
    key += s;
    if (last)
        key += m_suffix;
    auto it = m_vocab.find(key);
    return it == m_vocab.end() ? -1 : it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const
{
    if (word.empty())
        return;
    if (m_ignoreMerges) {
        if (auto it = m_vocab.find(word); it != m_vocab.end()) {
            out.push_back(it->second);
            return;
        }
    }
    const bool cacheable = word.size() < kCacheMaxWordBytes;
    if (cacheable) {
        std::unique_lock lock(m_cacheMutex, std::try_to_lock);
        if (lock.owns_lock()) {
            if (auto it = m_cache.find(word); it != m_cache.end()) {
                out.insert(out.end(), it->second.begin(), it->second.end());
                return;
            }
        }
    }
    const std::size_t before = out.size();
    mergeWord(word, out);
    if (cacheable) {
        std::unique_lock lock(m_cacheMutex, std::try_to_lock);
        if (lock.owns_lock() && m_cache.size() < kCacheCapacity)
            m_cache.emplace(
                std::string(word), std::vector<int32_t>(out.begin() + static_cast<std::ptrdiff_t>(before), out.end()));
    }
}

namespace {

struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t len; // bytes of the word it covers; 0 once merged into its left neighbour
};

struct QueuedMerge {
    int32_t rank;
    int32_t pos;
    int32_t newId;
};

// Heap order: lowest rank first, then leftmost position (HF's Merge ordering).
struct MergeLater {
    bool operator()(const QueuedMerge& a, const QueuedMerge& b) const
    {
        return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    }
};

} // namespace

void BpeModel::mergeWord(std::string_view word, std::vector<int32_t>& out) const
{
    thread_local std::vector<Symbol> symbols;
    thread_local std::vector<QueuedMerge> queue;
    symbols.clear();
    queue.clear();
    auto add = [&](int32_t id, std::size_t len) {
        const auto n = static_cast<int32_t>(symbols.size());
        if (n > 0)
            symbols.back().next = n;
        symbols.push_back({ id, n - 1, -1, static_cast<uint32_t>(len) });
    };

    // Initial symbols, one per character, with HF's unk / byte-fallback rules (including that a
    // pending unk is emitted only after byte-fallback tokens that follow it).
    bool haveUnk = false;
    int32_t unkId = -1;
    std::size_t unkLen = 0;
    const int32_t unkVocabId = m_unkToken ? m_vocab.find(*m_unkToken)->second : -1;
    for (std::size_t i = 0; i < word.size();) {
        const std::size_t n = std::min(utf8Length(static_cast<unsigned char>(word[i])), word.size() - i);
        const bool first = i == 0, last = i + n >= word.size();
        const int32_t id = symbolId(word.substr(i, n), first, last);
        if (id >= 0) {
            if (haveUnk) {
                add(unkId, unkLen);
                haveUnk = false;
            }
            add(id, n);
        } else {
            bool handled = false;
            if (m_byteFallback) {
                // HF falls back on the bytes of the (prefixed/suffixed) symbol string
                std::string s;
                if (!first)
                    s += m_prefix;
                s.append(word.substr(i, n));
                if (last)
                    s += m_suffix;
                bool all = true;
                for (char c : s)
                    all = all && m_byteFallbackIds[static_cast<unsigned char>(c)] >= 0;
                if (all) {
                    for (char c : s)
                        add(m_byteFallbackIds[static_cast<unsigned char>(c)], 1);
                    handled = true;
                }
            }
            if (!handled && m_unkToken) {
                if (haveUnk && m_fuseUnk) {
                    unkLen += n;
                } else {
                    if (haveUnk)
                        add(unkId, unkLen);
                    haveUnk = true;
                    unkId = unkVocabId;
                    unkLen = n;
                }
            }
        }
        i += n;
    }
    if (haveUnk)
        add(unkId, unkLen);

    if (symbols.size() > 1) {
        for (std::size_t i = 0; i + 1 < symbols.size(); ++i)
            if (const MergeValue* m = m_merges.find(pairKey(symbols[i].id, symbols[i + 1].id)))
                queue.push_back({ m->rank, static_cast<int32_t>(i), m->newId });
        std::make_heap(queue.begin(), queue.end(), MergeLater {});
        while (!queue.empty()) {
            std::pop_heap(queue.begin(), queue.end(), MergeLater {});
            const QueuedMerge top = queue.back();
            queue.pop_back();
            Symbol& cur = symbols[static_cast<std::size_t>(top.pos)];
            if (cur.len == 0 || cur.next == -1)
                continue;
            const auto nextPos = static_cast<std::size_t>(cur.next);
            const Symbol right = symbols[nextPos];
            // skip stale entries: the pair at this position changed since it was queued
            const MergeValue* m = m_merges.find(pairKey(cur.id, right.id));
            if (!m || m->newId != top.newId)
                continue;
            cur.id = top.newId;
            cur.len += right.len;
            cur.next = right.next;
            symbols[nextPos].len = 0;
            if (right.next >= 0)
                symbols[static_cast<std::size_t>(right.next)].prev = top.pos;
            if (cur.prev >= 0) {
                const Symbol& prev = symbols[static_cast<std::size_t>(cur.prev)];
                if (const MergeValue* pm = m_merges.find(pairKey(prev.id, cur.id))) {
                    queue.push_back({ pm->rank, cur.prev, pm->newId });
                    std::push_heap(queue.begin(), queue.end(), MergeLater {});
                }
            }
            if (cur.next >= 0) {
                const Symbol& next = symbols[static_cast<std::size_t>(cur.next)];
                if (const MergeValue* nm = m_merges.find(pairKey(cur.id, next.id))) {
                    queue.push_back({ nm->rank, top.pos, nm->newId });
                    std::push_heap(queue.begin(), queue.end(), MergeLater {});
                }
            }
        }
    }
    for (const Symbol& s : symbols)
        if (s.len != 0)
            out.push_back(s.id);
}

} // namespace moeatlas::tok
