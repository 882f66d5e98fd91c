// Internal: UTF-8 handling and the Unicode character properties the tokenizer pipeline needs,
// with the semantics of Rust's `char` methods that HF `tokenizers` relies on.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace moeatlas::tok {

// Decodes the code point at s[i] of VALID UTF-8 and returns its byte length.
inline std::size_t utf8Decode(std::string_view s, std::size_t i, char32_t& cp)
{
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    }
    if (b0 < 0xE0) {
        cp = (char32_t(b0 & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F);
        return 2;
    }
    if (b0 < 0xF0) {
        cp = (char32_t(b0 & 0x0F) << 12) | (char32_t(static_cast<unsigned char>(s[i + 1]) & 0x3F) << 6)
            | (static_cast<unsigned char>(s[i + 2]) & 0x3F);
        return 3;
    }
    cp = (char32_t(b0 & 0x07) << 18) | (char32_t(static_cast<unsigned char>(s[i + 1]) & 0x3F) << 12)
        | (char32_t(static_cast<unsigned char>(s[i + 2]) & 0x3F) << 6) | (static_cast<unsigned char>(s[i + 3]) & 0x3F);
    return 4;
}

// Byte length of the UTF-8 sequence starting with lead byte b (valid UTF-8 assumed).
inline std::size_t utf8Length(unsigned char b)
{
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

void appendUtf8(std::string& out, char32_t cp);

// Length of the valid UTF-8 prefix of `s`.
std::size_t validUtf8Prefix(std::string_view s);
// Rust's String::from_utf8_lossy: every maximal invalid subsequence becomes one U+FFFD.
std::string fromUtf8Lossy(std::string_view bytes);

// Rust char::is_whitespace (White_Space property).
bool isWhitespace(char32_t c);
// Rust char::is_numeric (general categories Nd, Nl, No).
bool isNumeric(char32_t c);
// Rust char::is_alphanumeric (Alphabetic or numeric).
bool isAlphanumeric(char32_t c);
// Rust regex `\w` (Alphabetic, marks, Nd, Pc, Join_Control).
bool isWordChar(char32_t c);
// ASCII punctuation or any Unicode P* category (HF's Punctuation pre-tokenizer).
bool isPunctuation(char32_t c);
// Unicode general category M* (HF's StripAccents removes these after NFD).
bool isCombiningMark(char32_t c);

// Per-character full lower-case mapping, as HF's Lowercase normalizer (char::to_lowercase).
std::string toLowercase(std::string_view s);

enum class NormalForm { Nfc, Nfd, Nfkc, Nfkd };
std::string unicodeNormalize(std::string_view s, NormalForm form);

} // namespace moeatlas::tok
