// Hugging Face tokenizer.json loader and BPE tokenizer. Encoding and decoding follow the
// `tokenizers` library exactly for the component types it supports (see docs/tokenizer.md);
// any other component type is rejected with an InputError naming the file and JSON path.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moeatlas {

namespace tok {
struct TokenizerImpl;
}

class Tokenizer {
public:
    // Reads a tokenizer.json. When a tokenizer_config.json lies beside it, its bos_token and
    // eos_token name the BOS/EOS tokens. Throws InputError on unreadable, malformed or
    // unsupported files.
    static Tokenizer fromFile(const std::string& path);
    // Same, from the JSON text itself; `sourceName` only labels error messages.
    static Tokenizer fromJson(std::string_view json, const std::string& sourceName = "<memory>");

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    // Token ids of `text` (UTF-8; invalid sequences are read as U+FFFD). With addSpecialTokens
    // the post-processor's template (BOS/EOS, ...) is applied, as in HF `encode(text, True)`.
    std::vector<int32_t> encode(std::string_view text, bool addSpecialTokens = true) const;
    // Text of `ids`; ids outside the vocabulary are skipped, as HF does.
    std::string decode(std::span<const int32_t> ids, bool skipSpecialTokens = false) const;

    std::optional<int32_t> tokenToId(std::string_view token) const;
    std::optional<std::string> idToToken(int32_t id) const;
    // One past the largest id of the model vocabulary and the added tokens.
    int64_t vocabSize() const;
    bool isSpecialToken(int32_t id) const;
    std::optional<int32_t> bosTokenId() const;
    std::optional<int32_t> eosTokenId() const;
    // The file (or source name) this tokenizer was read from.
    const std::string& source() const;

private:
    explicit Tokenizer(std::unique_ptr<tok::TokenizerImpl> impl);
    std::unique_ptr<tok::TokenizerImpl> m_impl;
};

} // namespace moeatlas
