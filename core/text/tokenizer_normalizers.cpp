#include "tokenizer_normalizers.h"

#include "tokenizer_unicode.h"

#include <stdexcept>
#include <vector>

namespace moeatlas::tok {

namespace {

class UnicodeNormalizer final : public Normalizer {
public:
    explicit UnicodeNormalizer(NormalForm form)
        : m_form(form)
    {
    }
    void normalize(std::string& text) const override { text = unicodeNormalize(text, m_form); }

private:
    NormalForm m_form;
};

class LowercaseNormalizer final : public Normalizer {
public:
    void normalize(std::string& text) const override { text = toLowercase(text); }
};

class ReplaceNormalizer final : public Normalizer {
public:
    ReplaceNormalizer(Pattern pattern, std::string content)
        : m_pattern(std::move(pattern))
        , m_content(std::move(content))
    {
    }
    void normalize(std::string& text) const override { text = m_pattern.replaceAll(text, m_content); }

private:
    Pattern m_pattern;
    std::string m_content;
};

class PrependNormalizer final : public Normalizer {
public:
    explicit PrependNormalizer(std::string prefix)
        : m_prefix(std::move(prefix))
    {
    }
    void normalize(std::string& text) const override
    {
        if (!text.empty()) // HF prepends nothing to an empty segment
            text.insert(0, m_prefix);
    }

private:
    std::string m_prefix;
};

class StripNormalizer final : public Normalizer {
public:
    StripNormalizer(bool left, bool right)
        : m_left(left)
        , m_right(right)
    {
    }
    void normalize(std::string& text) const override
    {
        std::size_t begin = 0, end = text.size();
        if (m_left) {
            while (begin < end) {
                char32_t cp = 0;
                const std::size_t n = utf8Decode(text, begin, cp);
                if (!isWhitespace(cp))
                    break;
                begin += n;
            }
        }
        if (m_right) {
            while (end > begin) {
                std::size_t start = end - 1;
                while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80)
                    --start;
                char32_t cp = 0;
                utf8Decode(text, start, cp);
                if (!isWhitespace(cp))
                    break;
                end = start;
            }
        }
        text = text.substr(begin, end - begin);
    }

private:
    bool m_left, m_right;
};

class StripAccentsNormalizer final : public Normalizer {
public:
    void normalize(std::string& text) const override
    {
        std::string out;
        out.reserve(text.size());
        for (std::size_t i = 0; i < text.size();) {
            char32_t cp = 0;
            const std::size_t n = utf8Decode(text, i, cp);
            if (!isCombiningMark(cp))
                out.append(text, i, n);
            i += n;
        }
        text = std::move(out);
    }
};

class SequenceNormalizer final : public Normalizer {
public:
    explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
        : m_parts(std::move(parts))
    {
    }
    void normalize(std::string& text) const override
    {
        for (const auto& p : m_parts)
            p->normalize(text);
    }

private:
    std::vector<std::unique_ptr<Normalizer>> m_parts;
};

} // namespace

std::unique_ptr<Normalizer> makeNormalizer(const Json& node, const JsonPath& path)
{
    if (node.is_null())
        return nullptr;
    const std::string type = componentType(node, path);
    if (type == "NFC")
        return std::make_unique<UnicodeNormalizer>(NormalForm::Nfc);
    if (type == "NFD")
        return std::make_unique<UnicodeNormalizer>(NormalForm::Nfd);
    if (type == "NFKC")
        return std::make_unique<UnicodeNormalizer>(NormalForm::Nfkc);
    if (type == "NFKD")
        return std::make_unique<UnicodeNormalizer>(NormalForm::Nfkd);
    if (type == "Lowercase")
        return std::make_unique<LowercaseNormalizer>();
    if (type == "StripAccents")
        return std::make_unique<StripAccentsNormalizer>();
    if (type == "Replace")
        return std::make_unique<ReplaceNormalizer>(
            parsePattern(member(node, "pattern", path), path / "pattern"), getString(node, "content", path));
    if (type == "Prepend")
        return std::make_unique<PrependNormalizer>(getString(node, "prepend", path));
    if (type == "Strip")
        return std::make_unique<StripNormalizer>(
            getBoolOr(node, "strip_left", true, path), getBoolOr(node, "strip_right", true, path));
    if (type == "Sequence") {
        const Json& list = getArray(node, "normalizers", path);
        std::vector<std::unique_ptr<Normalizer>> parts;
        for (std::size_t i = 0; i < list.size(); ++i) {
            auto part = makeNormalizer(list[i], (path / "normalizers")[i]);
            if (!part)
                (path / "normalizers")[i].fail("expected a normalizer, got null");
            parts.push_back(std::move(part));
        }
        return std::make_unique<SequenceNormalizer>(std::move(parts));
    }
    (path / "type").fail("unsupported normalizer type \"" + type + "\"");
}

} // namespace moeatlas::tok
