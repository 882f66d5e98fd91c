// Internal: HF post-processors for a single sequence (TemplateProcessing, ByteLevel, Roberta/Bert
// processing, Sequence): the special tokens wrapped around the encoded ids.
#pragma once

#include "tokenizer_json.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace moeatlas::tok {

class PostProcessor {
public:
    virtual ~PostProcessor() = default;
    virtual void process(std::vector<int32_t>& ids, bool addSpecialTokens) const = 0;
    // The special ids placed before/after the sequence (used to guess BOS/EOS).
    virtual void specialIds(std::vector<int32_t>& before, std::vector<int32_t>& after) const = 0;
};

std::unique_ptr<PostProcessor> makePostProcessor(const Json& node, const JsonPath& path);

} // namespace moeatlas::tok
