// Internal: HF decoders (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence).
// Each rewrites the list of token strings; the result is their concatenation.
#pragma once

#include "tokenizer_json.h"

#include <memory>
#include <string>
#include <vector>

namespace moeatlas::tok {

class Decoder {
public:
    virtual ~Decoder() = default;
    virtual void decodeChain(std::vector<std::string>& tokens) const = 0;
};

std::unique_ptr<Decoder> makeDecoder(const Json& node, const JsonPath& path);

} // namespace moeatlas::tok
