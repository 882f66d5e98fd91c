#include "tokenizer.h"

#include "tokenizer_added.h"
#include "tokenizer_bpe.h"
#include "tokenizer_decoders.h"
#include "tokenizer_json.h"
#include "tokenizer_normalizers.h"
#include "tokenizer_postprocessor.h"
#include "tokenizer_pretokenizers.h"
#include "tokenizer_unicode.h"

#include "util/error.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace moeatlas {

namespace tok {

std::string getSingleChar(const Json& node, std::string_view key, const JsonPath& path)
{
    std::string s = getString(node, key, path);
    if (s.empty() || validUtf8Prefix(s) != s.size() || utf8Length(static_cast<unsigned char>(s[0])) != s.size())
        (path / key).fail("expected a single character");
    return s;
}

Pattern parsePattern(const Json& node, const JsonPath& path)
{
    if (!node.is_object() || node.size() != 1)
        path.fail("expected {\"String\": ...} or {\"Regex\": ...}");
    if (node.contains("String"))
        return Pattern::literal(getString(node, "String", path));
    if (node.contains("Regex")) {
        const std::string re = getString(node, "Regex", path);
        try {
            return Pattern::regex(re);
        } catch (const std::invalid_argument& e) {
            (path / "Regex").fail(e.what());
        }
    }
    path.fail("expected {\"String\": ...} or {\"Regex\": ...}");
}

struct TokenizerImpl {
    std::string source;
    std::unique_ptr<Normalizer> normalizer;
    std::unique_ptr<PreTokenizer> preTokenizer;
    std::unique_ptr<BpeModel> model;
    std::unique_ptr<PostProcessor> postProcessor;
    std::unique_ptr<Decoder> decoder;
    AddedVocabulary added;
    std::optional<int32_t> bos, eos;

    void encodeSegment(std::string_view text, bool atStart, std::vector<int32_t>& ids) const
    {
        if (text.empty())
            return;
        if (!preTokenizer) {
            model->tokenize(text, ids);
            return;
        }
        thread_local std::vector<Piece> pieces;
        pieces.clear();
        pieces.push_back({ std::string(text), atStart });
        preTokenizer->apply(pieces);
        for (const auto& p : pieces)
            model->tokenize(p.text, ids);
    }

    // A segment between raw added tokens: normalize, cut out normalized added tokens, encode.
    void encodeRawSegment(std::string_view text, bool atStart, std::vector<int32_t>& ids) const
    {
        std::string normalized;
        std::string_view view = text;
        if (normalizer) {
            normalized.assign(text);
            normalizer->normalize(normalized);
            view = normalized;
        }
        if (!added.hasNormalizedTokens()) {
            encodeSegment(view, atStart, ids);
            return;
        }
        std::vector<AddedSplit> splits;
        added.splitNormalized(view, splits);
        for (const auto& s : splits) {
            if (s.id >= 0)
                ids.push_back(s.id);
            else
                encodeSegment(view.substr(s.start, s.end - s.start), atStart && s.start == 0, ids);
        }
    }
};

namespace {

std::vector<AddedToken> parseAddedTokens(const Json& root, const JsonPath& rootPath)
{
    std::vector<AddedToken> tokens;
    if (!root.contains("added_tokens") || root["added_tokens"].is_null())
        return tokens;
    const Json& list = getArray(root, "added_tokens", rootPath);
    for (std::size_t i = 0; i < list.size(); ++i) {
        const JsonPath here = (rootPath / "added_tokens")[i];
        const Json& t = list[i];
        AddedToken token;
        token.content = getString(t, "content", here);
        if (validUtf8Prefix(token.content) != token.content.size())
            (here / "content").fail("not valid UTF-8");
        token.special = getBoolOr(t, "special", false, here);
        token.singleWord = getBoolOr(t, "single_word", false, here);
        token.lstrip = getBoolOr(t, "lstrip", false, here);
        token.rstrip = getBoolOr(t, "rstrip", false, here);
        token.normalized = getBoolOr(t, "normalized", !token.special, here);
        tokens.push_back(std::move(token));
    }
    return tokens;
}

const Json& optionalMember(const Json& root, const char* key)
{
    static const Json null;
    auto it = root.find(key);
    return it == root.end() ? null : *it;
}

// bos_token / eos_token of a tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> configToken(const Json& config, const char* key)
{
    auto it = config.find(key);
    if (it == config.end())
        return std::nullopt;
    if (it->is_string())
        return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
        return (*it)["content"].get<std::string>();
    return std::nullopt;
}

} // namespace

} // namespace tok

using tok::TokenizerImpl;

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl)
    : m_impl(std::move(impl))
{
}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::fromJson(std::string_view json, const std::string& sourceName)
{
    using namespace tok;
    Json root;
    try {
        root = Json::parse(json.begin(), json.end());
    } catch (const Json::exception& e) {
        throw InputError(sourceName + ": invalid JSON: " + e.what());
    }
    auto impl = std::make_unique<TokenizerImpl>();
    impl->source = sourceName;
    const JsonPath rootPath(impl->source, "");
    if (!root.is_object())
        rootPath.fail("expected a tokenizer.json object");
    try {
        impl->normalizer = makeNormalizer(optionalMember(root, "normalizer"), rootPath / "normalizer");
        impl->preTokenizer = makePreTokenizer(optionalMember(root, "pre_tokenizer"), rootPath / "pre_tokenizer");
        impl->model = BpeModel::fromJson(member(root, "model", rootPath), rootPath / "model");
        impl->postProcessor = makePostProcessor(optionalMember(root, "post_processor"), rootPath / "post_processor");
        impl->decoder = makeDecoder(optionalMember(root, "decoder"), rootPath / "decoder");
        const std::vector<AddedToken> added = parseAddedTokens(root, rootPath);
        const auto* model = impl->model.get();
        const int64_t modelCount = model->vocabCount();
        impl->added.build(
            added, [model](const std::string& c) { return model->tokenToId(c); }, modelCount);
        const Normalizer* normalizer = impl->normalizer.get();
        impl->added.buildTries([normalizer](const std::string& content) {
            std::string n = content;
            if (normalizer)
                normalizer->normalize(n);
            return n;
        });
    } catch (const Json::exception& e) {
        throw InputError(sourceName + ": malformed tokenizer.json: " + e.what());
    }
    if (impl->postProcessor) {
        std::vector<int32_t> before, after;
        impl->postProcessor->specialIds(before, after);
        if (!before.empty())
            impl->bos = before.front();
        if (!after.empty())
            impl->eos = after.back();
    }
    return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::fromFile(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw InputError(path + ": cannot open tokenizer file");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (in.bad())
        throw InputError(path + ": read error");
    Tokenizer t = fromJson(buffer.str(), path);

    // BOS/EOS named by a tokenizer_config.json beside the file win over the template's guess.
    const auto configPath = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(configPath, ec)) {
        std::ifstream cin(configPath, std::ios::binary);
        const tok::Json config = tok::Json::parse(cin, nullptr, false);
        if (config.is_object()) {
            if (auto bos = tok::configToken(config, "bos_token"))
                if (auto id = t.tokenToId(*bos))
                    t.m_impl->bos = id;
            if (auto eos = tok::configToken(config, "eos_token"))
                if (auto id = t.tokenToId(*eos))
                    t.m_impl->eos = id;
        }
    }
    return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool addSpecialTokens) const
{
    using namespace tok;
    std::string sanitized;
    if (validUtf8Prefix(text) != text.size()) {
        sanitized = fromUtf8Lossy(text);
        text = sanitized;
    }
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    if (!m_impl->added.hasRawTokens()) {
        m_impl->encodeRawSegment(text, true, ids);
    } else {
        std::vector<AddedSplit> splits;
        m_impl->added.splitRaw(text, splits);
        for (const auto& s : splits) {
            if (s.id >= 0)
                ids.push_back(s.id);
            else
                m_impl->encodeRawSegment(text.substr(s.start, s.end - s.start), s.start == 0, ids);
        }
    }
    if (m_impl->postProcessor)
        m_impl->postProcessor->process(ids, addSpecialTokens);
    return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skipSpecialTokens) const
{
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
        const std::string* content = m_impl->added.decodedContent(id);
        if (!content)
            content = m_impl->model->idToToken(id);
        if (!content)
            continue; // unknown ids are dropped, as HF does
        if (skipSpecialTokens && m_impl->added.isSpecialContent(*content))
            continue;
        tokens.push_back(*content);
    }
    std::string out;
    if (m_impl->decoder) {
        m_impl->decoder->decodeChain(tokens);
        for (const auto& t : tokens)
            out += t;
    } else {
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (i)
                out += ' ';
            out += tokens[i];
        }
    }
    return out;
}

std::optional<int32_t> Tokenizer::tokenToId(std::string_view token) const
{
    if (auto id = m_impl->added.idOf(token))
        return id;
    return m_impl->model->tokenToId(token);
}

std::optional<std::string> Tokenizer::idToToken(int32_t id) const
{
    if (const auto* t = m_impl->added.decodedContent(id))
        return *t;
    if (const auto* s = m_impl->model->idToToken(id))
        return *s;
    return std::nullopt;
}

int64_t Tokenizer::vocabSize() const
{
    return std::max(m_impl->model->idLimit(), m_impl->added.idLimit());
}

bool Tokenizer::isSpecialToken(int32_t id) const
{
    const auto* t = m_impl->added.byId(id);
    return t && m_impl->added.isSpecialContent(t->content);
}

std::optional<int32_t> Tokenizer::bosTokenId() const
{
    return m_impl->bos;
}
std::optional<int32_t> Tokenizer::eosTokenId() const
{
    return m_impl->eos;
}
const std::string& Tokenizer::source() const
{
    return m_impl->source;
}

} // namespace moeatlas
