// Internal: HF normalizers (NFC/NFD/NFKC/NFKD, Lowercase, Replace, Prepend, Strip, StripAccents,
// Sequence). Each rewrites one segment of text between added tokens.
#pragma once

#include "tokenizer_json.h"

#include <memory>
#include <string>

namespace moeatlas::tok {

class Normalizer {
public:
    virtual ~Normalizer() = default;
    virtual void normalize(std::string& text) const = 0;
};

// nullptr for a JSON null; InputError naming `path` for an unknown or malformed normalizer.
std::unique_ptr<Normalizer> makeNormalizer(const Json& node, const JsonPath& path);

} // namespace moeatlas::tok
