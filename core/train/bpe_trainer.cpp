#include "train/bpe_trainer.h"

#include "text/tokenizer_pretokenizers.h"
#include "util/atomic_file.h"
#include "util/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <tuple>
#include <unordered_map>

namespace moeatlas {

namespace {

const nlohmann::json& byteLevelNode()
{
    static const nlohmann::json node
        = { { "type", "ByteLevel" }, { "add_prefix_space", false }, { "trim_offsets", true }, { "use_regex", true } };
    return node;
}

// Splits a byte-level word (UTF-8 of mapped characters) into its characters.
std::vector<std::string> characters(const std::string& word)
{
    std::vector<std::string> out;
    for (std::size_t i = 0; i < word.size();) {
        const auto b = static_cast<unsigned char>(word[i]);
        const std::size_t n = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
        out.push_back(word.substr(i, n));
        i += n;
    }
    return out;
}

} // namespace

BpeVocabulary trainBpe(const std::vector<std::string>& texts, const BpeTrainerOptions& o, const ProgressFn& progress)
{
    const int fixed = 256 + static_cast<int>(o.specialTokens.size());
    if (o.vocabSize < fixed)
        throw InputError("BPE vocabulary size " + std::to_string(o.vocabSize) + " is below 256 bytes + "
            + std::to_string(o.specialTokens.size()) + " special tokens");
    BpeVocabulary v;
    v.specialTokens = o.specialTokens;
    std::unordered_map<std::string, int> ids;
    for (const std::string& c : tok::byteLevelAlphabet()) {
        ids.emplace(c, static_cast<int>(v.tokens.size()));
        v.tokens.push_back(c);
    }
    for (const std::string& s : o.specialTokens) {
        if (!ids.emplace(s, static_cast<int>(v.tokens.size())).second)
            throw InputError("special token '" + s + "' given twice");
        v.tokens.push_back(s);
    }

    // Word frequencies after pre-tokenization.
    const std::string source = "<bpe trainer>";
    const auto pre = tok::makePreTokenizer(byteLevelNode(), tok::JsonPath(source, "pre_tokenizer"));
    std::map<std::string, int64_t> counts;
    for (const std::string& text : texts) {
        std::vector<tok::Piece> pieces;
        pieces.push_back({ text, true });
        pre->apply(pieces);
        for (const tok::Piece& p : pieces)
            ++counts[p.text];
    }
    struct Word {
        std::vector<int> symbols;
        int64_t count;
    };
    std::vector<Word> words;
    words.reserve(counts.size());
    for (const auto& [text, count] : counts) {
        Word w { {}, count };
        for (const std::string& c : characters(text))
            w.symbols.push_back(ids.at(c));
        words.push_back(std::move(w));
    }

    const int targetMerges = o.vocabSize - fixed;
    while (static_cast<int>(v.tokens.size()) < o.vocabSize) {
        std::map<std::pair<int, int>, int64_t> pairs;
        for (const Word& w : words)
            for (std::size_t i = 0; i + 1 < w.symbols.size(); ++i)
                pairs[{ w.symbols[i], w.symbols[i + 1] }] += w.count;
        const std::pair<int, int>* best = nullptr;
        int64_t bestCount = 0;
        for (const auto& [pair, count] : pairs) {
            if (count < bestCount)
                continue;
            if (count == bestCount && best) {
                const auto key = std::tie(v.tokens[pair.first], v.tokens[pair.second]);
                if (!(key < std::tie(v.tokens[best->first], v.tokens[best->second])))
                    continue;
            }
            best = &pair;
            bestCount = count;
        }
        if (!best || bestCount < o.minPairCount)
            break;
        const auto [a, b] = *best;
        const std::string merged = v.tokens[a] + v.tokens[b];
        auto [it, added] = ids.emplace(merged, static_cast<int>(v.tokens.size()));
        if (added)
            v.tokens.push_back(merged);
        v.merges.emplace_back(v.tokens[a], v.tokens[b]);
        const int id = it->second;
        for (Word& w : words) {
            std::vector<int> out;
            out.reserve(w.symbols.size());
            for (std::size_t i = 0; i < w.symbols.size(); ++i) {
                if (i + 1 < w.symbols.size() && w.symbols[i] == a && w.symbols[i + 1] == b) {
                    out.push_back(id);
                    ++i;
                } else {
                    out.push_back(w.symbols[i]);
                }
            }
            w.symbols = std::move(out);
        }
        if (progress
            && !progress(
                { "merges", static_cast<int64_t>(v.tokens.size()) - fixed, static_cast<int64_t>(targetMerges) }))
            throw Cancelled();
    }
    return v;
}

std::string bpeTokenizerJson(const BpeVocabulary& v)
{
    nlohmann::ordered_json root;
    root["version"] = "1.0";
    root["truncation"] = nullptr;
    root["padding"] = nullptr;
    auto added = nlohmann::ordered_json::array();
    for (const std::string& s : v.specialTokens) {
        const auto id = std::find(v.tokens.begin(), v.tokens.end(), s) - v.tokens.begin();
        added.push_back({ { "id", id }, { "content", s }, { "single_word", false }, { "lstrip", false },
            { "rstrip", false }, { "normalized", false }, { "special", true } });
    }
    root["added_tokens"] = added;
    root["normalizer"] = nullptr;
    root["pre_tokenizer"] = byteLevelNode();
    root["post_processor"] = nullptr;
    root["decoder"]
        = { { "type", "ByteLevel" }, { "add_prefix_space", true }, { "trim_offsets", true }, { "use_regex", true } };
    nlohmann::ordered_json model;
    model["type"] = "BPE";
    model["dropout"] = nullptr;
    model["unk_token"] = nullptr;
    model["continuing_subword_prefix"] = nullptr;
    model["end_of_word_suffix"] = nullptr;
    model["fuse_unk"] = false;
    model["byte_fallback"] = false;
    model["ignore_merges"] = false;
    nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
    for (std::size_t i = 0; i < v.tokens.size(); ++i)
        vocab[v.tokens[i]] = i;
    model["vocab"] = vocab;
    auto merges = nlohmann::ordered_json::array();
    for (const auto& [a, b] : v.merges)
        merges.push_back({ a, b });
    model["merges"] = merges;
    root["model"] = model;
    return root.dump(1) + "\n";
}

std::string bpeTokenizerConfigJson(const BpeVocabulary& v)
{
    nlohmann::ordered_json c;
    c["tokenizer_class"] = "PreTrainedTokenizerFast";
    if (!v.specialTokens.empty())
        c["bos_token"] = v.specialTokens[0];
    if (v.specialTokens.size() > 1)
        c["eos_token"] = v.specialTokens[1];
    c["add_bos_token"] = false;
    c["model_max_length"] = 4096;
    c["clean_up_tokenization_spaces"] = false;
    return c.dump(2) + "\n";
}

void writeBpeTokenizer(const BpeVocabulary& v, const std::filesystem::path& dir)
{
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec)
        throw InputError(dir.string() + ": cannot create directory: " + ec.message());
    writeFileAtomically(dir / "tokenizer.json", bpeTokenizerJson(v));
    writeFileAtomically(dir / "tokenizer_config.json", bpeTokenizerConfigJson(v));
}

} // namespace moeatlas
