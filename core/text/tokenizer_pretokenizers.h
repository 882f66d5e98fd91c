// Internal: HF pre-tokenizers (ByteLevel, Split, Digits, Metaspace, Punctuation, WhitespaceSplit,
// CharDelimiterSplit, Sequence). They cut one normalized segment into the words the model sees.
#pragma once

#include "tokenizer_json.h"

#include <array>
#include <memory>
#include <string>
#include <vector>

namespace moeatlas::tok {

struct Piece {
    std::string text;
    // The piece starts at offset 0 of the original input (Metaspace's prepend_scheme "first").
    bool atStart = false;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Cuts `text` at `spans` as HF NormalizedString::split does; empty pieces are dropped.
void splitBySpans(
    std::string_view text, std::vector<Span>& spans, SplitBehavior behavior, bool atStart, std::vector<Piece>& out);

class PreTokenizer {
public:
    virtual ~PreTokenizer() = default;
    // Appends the non-empty pieces `in` splits into.
    virtual void split(Piece&& in, std::vector<Piece>& out) const = 0;
    // Applies split() to every piece.
    void apply(std::vector<Piece>& pieces) const;
};

// GPT-2's byte-to-character table: every byte maps to a printable code point (UTF-8 encoded).
const std::array<std::string, 256>& byteLevelAlphabet();

std::unique_ptr<PreTokenizer> makePreTokenizer(const Json& node, const JsonPath& path);

} // namespace moeatlas::tok
