#include "tokenizer_unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utypes.h>

#include <stdexcept>
#include <vector>

namespace moeatlas::tok {

void appendUtf8(std::string& out, char32_t cp)
{
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

namespace {

// Bytes of the well-formed sequence at s[i], or 0 with `bad` set to the length of the maximal
// invalid subpart (at least 1), following Unicode's "maximal subpart" rule that Rust uses.
std::size_t checkSequence(std::string_view s, std::size_t i, std::size_t& bad)
{
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80)
        return 1;
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        if (b0 == 0xE0)
            lo = 0xA0;
        else if (b0 == 0xED)
            hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        if (b0 == 0xF0)
            lo = 0x90;
        else if (b0 == 0xF4)
            hi = 0x8F;
    } else {
        bad = 1;
        return 0;
    }
    for (std::size_t k = 1; k <= need; ++k) {
        if (i + k >= s.size()) {
            bad = k;
            return 0;
        }
        const auto b = static_cast<unsigned char>(s[i + k]);
        const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (b < l || b > h) {
            bad = k;
            return 0;
        }
    }
    return need + 1;
}

} // namespace

std::size_t validUtf8Prefix(std::string_view s)
{
    std::size_t i = 0;
    while (i < s.size()) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        std::size_t bad = 0;
        const std::size_t n = checkSequence(s, i, bad);
        if (n == 0)
            return i;
        i += n;
    }
    return i;
}

std::string fromUtf8Lossy(std::string_view bytes)
{
    std::string out;
    out.reserve(bytes.size());
    std::size_t i = 0;
    while (i < bytes.size()) {
        std::size_t bad = 0;
        const std::size_t n = checkSequence(bytes, i, bad);
        if (n > 0) {
            out.append(bytes.substr(i, n));
            i += n;
        } else {
            out.append("\xEF\xBF\xBD");
            i += bad;
        }
    }
    return out;
}

bool isWhitespace(char32_t c)
{
    if (c < 0x80)
        return c == ' ' || (c >= 0x09 && c <= 0x0D);
    return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

bool isNumeric(char32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    const auto t = u_charType(static_cast<UChar32>(c));
    return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool isAlphanumeric(char32_t c)
{
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) || isNumeric(c);
}

bool isWordChar(char32_t c)
{
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const auto u = static_cast<UChar32>(c);
    const auto t = u_charType(u);
    return u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK
        || t == U_COMBINING_SPACING_MARK || t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION
        || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL);
}

bool isPunctuation(char32_t c)
{
    if (c < 0x80)
        return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60)
            || (c >= 0x7B && c <= 0x7E);
    return u_ispunct(static_cast<UChar32>(c));
}

bool isCombiningMark(char32_t c)
{
    const auto t = u_charType(static_cast<UChar32>(c));
    return t == U_NON_SPACING_MARK || t == U_ENCLOSING_MARK || t == U_COMBINING_SPACING_MARK;
}

namespace {

std::u16string toUtf16(std::string_view s)
{
    std::u16string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        char32_t cp = 0;
        i += utf8Decode(s, i, cp);
        if (cp >= 0x10000) {
            cp -= 0x10000;
            out.push_back(static_cast<char16_t>(0xD800 + (cp >> 10)));
            out.push_back(static_cast<char16_t>(0xDC00 + (cp & 0x3FF)));
        } else {
            out.push_back(static_cast<char16_t>(cp));
        }
    }
    return out;
}

void appendUtf16(std::string& out, const char16_t* s, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) {
        char32_t cp = s[i];
        if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < n && s[i + 1] >= 0xDC00 && s[i + 1] < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (s[i + 1] - 0xDC00);
            ++i;
        }
        appendUtf8(out, cp);
    }
}

} // namespace

std::string toLowercase(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const auto b = static_cast<unsigned char>(s[i]);
        if (b < 0x80) {
            out.push_back(b >= 'A' && b <= 'Z' ? static_cast<char>(b + 32) : static_cast<char>(b));
            ++i;
            continue;
        }
        char32_t cp = 0;
        i += utf8Decode(s, i, cp);
        // One code point at a time: HF maps each char on its own, so the context-dependent rules
        // of a whole-string lower-casing (final sigma) must not apply.
        UChar src[2];
        int32_t srcLen = 0;
        U16_APPEND_UNSAFE(src, srcLen, static_cast<UChar32>(cp));
        UChar dst[8];
        UErrorCode status = U_ZERO_ERROR;
        const int32_t n = u_strToLower(dst, 8, src, srcLen, "", &status);
        if (U_FAILURE(status) || n > 8)
            appendUtf8(out, cp);
        else
            appendUtf16(out, reinterpret_cast<const char16_t*>(dst), static_cast<std::size_t>(n));
    }
    return out;
}

std::string unicodeNormalize(std::string_view s, NormalForm form)
{
    bool ascii = true;
    for (char ch : s)
        if (static_cast<unsigned char>(ch) >= 0x80) {
            ascii = false;
            break;
        }
    if (ascii)
        return std::string(s); // every form leaves ASCII unchanged
    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2* norm = nullptr;
    switch (form) {
    case NormalForm::Nfc:
        norm = unorm2_getNFCInstance(&status);
        break;
    case NormalForm::Nfd:
        norm = unorm2_getNFDInstance(&status);
        break;
    case NormalForm::Nfkc:
        norm = unorm2_getNFKCInstance(&status);
        break;
    case NormalForm::Nfkd:
        norm = unorm2_getNFKDInstance(&status);
        break;
    }
    if (U_FAILURE(status))
        throw std::runtime_error("ICU normalizer unavailable");
    const std::u16string src = toUtf16(s);
    std::vector<UChar> dst(src.size() * 4 + 16);
    for (;;) {
        status = U_ZERO_ERROR;
        const int32_t n = unorm2_normalize(norm, reinterpret_cast<const UChar*>(src.data()),
            static_cast<int32_t>(src.size()), dst.data(), static_cast<int32_t>(dst.size()), &status);
        if (status == U_BUFFER_OVERFLOW_ERROR) {
            dst.resize(static_cast<std::size_t>(n) + 16);
            continue;
        }
        if (U_FAILURE(status))
            throw std::runtime_error("ICU normalization failed");
        std::string out;
        out.reserve(static_cast<std::size_t>(n) + 8);
        appendUtf16(out, reinterpret_cast<const char16_t*>(dst.data()), static_cast<std::size_t>(n));
        return out;
    }
}

} // namespace moeatlas::tok
