#include "tokenizer_decoders.h"

#include "tokenizer_pretokenizers.h"
#include "tokenizer_unicode.h"

#include <unordered_map>

namespace moeatlas::tok {

namespace {

class ByteLevelDecoder final : public Decoder {
public:
    ByteLevelDecoder()
    {
        const auto& alphabet = byteLevelAlphabet();
        for (int b = 0; b < 256; ++b) {
            char32_t cp = 0;
            utf8Decode(alphabet[b], 0, cp);
            m_charToByte[cp] = static_cast<unsigned char>(b);
        }
    }
    void decodeChain(std::vector<std::string>& tokens) const override
    {
        // Per token: all characters map back to bytes, or the token's own UTF-8 is kept.
        std::string bytes;
        std::string tokenBytes;
        for (const auto& t : tokens) {
            tokenBytes.clear();
            bool ok = true;
            for (std::size_t i = 0; i < t.size() && ok;) {
                char32_t cp = 0;
                i += utf8Decode(t, i, cp);
                auto it = m_charToByte.find(cp);
                if (it == m_charToByte.end())
                    ok = false;
                else
                    tokenBytes.push_back(static_cast<char>(it->second));
            }
            bytes += ok ? tokenBytes : t;
        }
        tokens.assign(1, fromUtf8Lossy(bytes));
    }

private:
    std::unordered_map<char32_t, unsigned char> m_charToByte;
};

class MetaspaceDecoder final : public Decoder {
public:
    MetaspaceDecoder(std::string replacement, bool prependFirst)
        : m_replacement(std::move(replacement))
        , m_prepend(prependFirst)
    {
    }
    void decodeChain(std::vector<std::string>& tokens) const override
    {
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            std::string out;
            const std::string& t = tokens[i];
            for (std::size_t p = 0; p < t.size();) {
                if (t.compare(p, m_replacement.size(), m_replacement) == 0) {
                    // the first token loses every replacement char when a prefix was prepended
                    if (!(i == 0 && m_prepend))
                        out += ' ';
                    p += m_replacement.size();
                } else {
                    out += t[p++];
                }
            }
            tokens[i] = std::move(out);
        }
    }

private:
    std::string m_replacement;
    bool m_prepend;
};

class ReplaceDecoder final : public Decoder {
public:
    ReplaceDecoder(Pattern pattern, std::string content)
        : m_pattern(std::move(pattern))
        , m_content(std::move(content))
    {
    }
    void decodeChain(std::vector<std::string>& tokens) const override
    {
        for (auto& t : tokens)
            t = m_pattern.replaceAll(t, m_content);
    }

private:
    Pattern m_pattern;
    std::string m_content;
};

int hexDigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// "<0xHH>" -> byte, with Rust's u8::from_str_radix rules for the two characters (a leading '+').
int byteToken(const std::string& t)
{
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>')
        return -1;
    if (t[3] == '+')
        return hexDigit(t[4]);
    const int hi = hexDigit(t[3]), lo = hexDigit(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class ByteFallbackDecoder final : public Decoder {
public:
    void decodeChain(std::vector<std::string>& tokens) const override
    {
        std::vector<std::string> out;
        out.reserve(tokens.size());
        std::string pending;
        auto flush = [&] {
            if (pending.empty())
                return;
            if (validUtf8Prefix(pending) == pending.size())
                out.push_back(pending);
            else
                for (std::size_t i = 0; i < pending.size(); ++i)
                    out.emplace_back("\xEF\xBF\xBD");
            pending.clear();
        };
        for (auto& t : tokens) {
            const int b = byteToken(t);
            if (b >= 0) {
                pending.push_back(static_cast<char>(b));
            } else {
                flush();
                out.push_back(std::move(t));
            }
        }
        flush();
        tokens = std::move(out);
    }
};

class FuseDecoder final : public Decoder {
public:
    void decodeChain(std::vector<std::string>& tokens) const override
    {
        std::string all;
        for (const auto& t : tokens)
            all += t;
        tokens.clear();
        tokens.push_back(std::move(all));
    }
};

class StripDecoder final : public Decoder {
public:
    StripDecoder(char32_t content, std::size_t start, std::size_t stop)
        : m_content(content)
        , m_start(start)
        , m_stop(stop)
    {
    }
    void decodeChain(std::vector<std::string>& tokens) const override
    {
        for (auto& t : tokens) {
            std::vector<std::pair<std::size_t, char32_t>> chars; // (byte offset, code point)
            for (std::size_t i = 0; i < t.size();) {
                char32_t cp = 0;
                const std::size_t n = utf8Decode(t, i, cp);
                chars.emplace_back(i, cp);
                i += n;
            }
            std::size_t startCut = 0;
            for (std::size_t i = 0; i < m_start && i < chars.size(); ++i) {
                if (chars[i].second != m_content)
                    break;
                startCut = i + 1;
            }
            std::size_t stopCut = chars.size();
            for (std::size_t i = 0; i < m_stop && i < chars.size(); ++i) {
                const std::size_t index = chars.size() - i - 1;
                if (chars[index].second != m_content)
                    break;
                stopCut = index;
            }
            if (stopCut <= startCut) {
                t.clear();
                continue;
            }
            const std::size_t b0 = startCut < chars.size() ? chars[startCut].first : t.size();
            const std::size_t b1 = stopCut < chars.size() ? chars[stopCut].first : t.size();
            t = t.substr(b0, b1 - b0);
        }
    }

private:
    char32_t m_content;
    std::size_t m_start, m_stop;
};

class SequenceDecoder final : public Decoder {
public:
    explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
        : m_parts(std::move(parts))
    {
    }
    void decodeChain(std::vector<std::string>& tokens) const override
    {
        for (const auto& p : m_parts)
            p->decodeChain(tokens);
    }

private:
    std::vector<std::unique_ptr<Decoder>> m_parts;
};

} // namespace

std::unique_ptr<Decoder> makeDecoder(const Json& node, const JsonPath& path)
{
    if (node.is_null())
        return nullptr;
    const std::string type = componentType(node, path);
    if (type == "ByteLevel")
        return std::make_unique<ByteLevelDecoder>();
    if (type == "Metaspace") {
        bool prepend = true;
        if (node.contains("prepend_scheme") && !node["prepend_scheme"].is_null()) {
            const std::string s = getString(node, "prepend_scheme", path);
            if (s != "first" && s != "always" && s != "never")
                (path / "prepend_scheme").fail("unsupported prepend_scheme \"" + s + "\"");
            prepend = s != "never";
        } else {
            prepend = getBoolOr(node, "add_prefix_space", true, path);
        }
        return std::make_unique<MetaspaceDecoder>(getSingleChar(node, "replacement", path), prepend);
    }
    if (type == "Replace")
        return std::make_unique<ReplaceDecoder>(
            parsePattern(member(node, "pattern", path), path / "pattern"), getString(node, "content", path));
    if (type == "ByteFallback")
        return std::make_unique<ByteFallbackDecoder>();
    if (type == "Fuse")
        return std::make_unique<FuseDecoder>();
    if (type == "Strip") {
        const std::string c = getSingleChar(node, "content", path);
        char32_t cp = 0;
        utf8Decode(c, 0, cp);
        const int64_t start = getIntOr(node, "start", 0, path), stop = getIntOr(node, "stop", 0, path);
        if (start < 0 || stop < 0)
            path.fail("Strip start/stop must not be negative");
        return std::make_unique<StripDecoder>(cp, static_cast<std::size_t>(start), static_cast<std::size_t>(stop));
    }
    if (type == "Sequence") {
        const Json& list = getArray(node, "decoders", path);
        std::vector<std::unique_ptr<Decoder>> parts;
        for (std::size_t i = 0; i < list.size(); ++i) {
            auto part = makeDecoder(list[i], (path / "decoders")[i]);
            if (!part)
                (path / "decoders")[i].fail("expected a decoder, got null");
            parts.push_back(std::move(part));
        }
        return std::make_unique<SequenceDecoder>(std::move(parts));
    }
    (path / "type").fail("unsupported decoder type \"" + type + "\"");
}

} // namespace moeatlas::tok
