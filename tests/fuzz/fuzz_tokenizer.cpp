// libFuzzer target for the tokenizer: the first input byte picks a mode.
//   mode 0: the rest is a tokenizer.json; load it and, when it loads, encode/decode a fixed text.
//   mode 1: the rest is text; encode and decode it with a small built-in tokenizer that uses
//           every pipeline stage (normalizer sequence, regex split, ByteLevel, added tokens).
//   mode 2: same text with a SentencePiece-style tokenizer (Metaspace, byte_fallback, unk).
// Only InputError may escape loading; encoding must never throw.
#include "text/tokenizer.h"
#include "util/error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

const char* const kByteLevelJson = R"({
  "added_tokens": [
    {"id": 300, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 301, "content": "ab", "single_word": true, "lstrip": true, "rstrip": true, "normalized": true, "special": false}],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"},
                 {"type": "Replace", "pattern": {"Regex": "\\s{3,}"}, "content": "  "}]},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
  "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|end|>", "type_id": 0}}],
                     "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [300], "tokens": ["<|end|>"]}}},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": VOCAB, "merges": ["a b", "c d", "ab cd", "Ġ t", "Ġt h"]}})";

const char* const kSpmJson = R"({
  "added_tokens": [{"id": 0, "content": "<unk>", "special": true, "normalized": false},
                   {"id": 1, "content": "<s>", "special": true, "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true},
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                     "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
              {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
            "vocab": {"<unk>": 0, "<s>": 1, "<0xC3>": 2, "<0xA9>": 3, "▁": 4, "a": 5, "b": 6, "▁a": 7, "ab": 8},
            "merges": ["▁ a", "a b"]}})";

std::string byteLevelJson()
{
    // every byte-level character, so any input maps onto the vocabulary
    std::string vocab = "{";
    int id = 0;
    for (int b = 0; b < 256; ++b) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        char32_t cp = static_cast<char32_t>(printable ? b : 256 + id);
        if (!printable)
            ++id;
        std::string s;
        if (cp < 0x80)
            s += static_cast<char>(cp);
        else {
            s += static_cast<char>(0xC0 | (cp >> 6));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        }
        if (s == "\"" || s == "\\")
            s = "\\" + s;
        vocab += "\"" + s + "\": " + std::to_string(b) + ",";
    }
    vocab += "\"ab\": 256, \"cd\": 257, \"abcd\": 258, \"Ġt\": 259, \"Ġth\": 260, \"<|end|>\": 300}";
    std::string json = kByteLevelJson;
    json.replace(json.find("VOCAB"), 5, vocab);
    return json;
}

void exercise(const moeatlas::Tokenizer& tok, std::string_view text)
{
    const auto ids = tok.encode(text, true);
    (void)tok.decode(ids, false);
    (void)tok.decode(ids, true);
    (void)tok.encode(text, false);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    static const moeatlas::Tokenizer byteLevel = moeatlas::Tokenizer::fromJson(byteLevelJson(), "fuzz-bytelevel");
    static const moeatlas::Tokenizer spm = moeatlas::Tokenizer::fromJson(kSpmJson, "fuzz-spm");
    if (size == 0)
        return 0;
    const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
    switch (data[0] % 3) {
    case 0:
        try {
            const auto tok = moeatlas::Tokenizer::fromJson(rest, "fuzz-input");
            exercise(tok, "Hello wörld 123 中文 <s> \t\n 😀");
            exercise(tok, rest.substr(0, 256));
        } catch (const moeatlas::InputError&) {
        }
        break;
    case 1:
        exercise(byteLevel, rest);
        break;
    default:
        exercise(spm, rest);
        break;
    }
    return 0;
}
