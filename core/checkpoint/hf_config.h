// Reads a Hugging Face config.json into a ModelSpec. Field names and defaults follow the
// transformers configuration classes of each architecture (both the v4 hub spelling,
// rope_theta + rope_scaling, and the v5 spelling, rope_parameters).
#pragma once

#include "checkpoint/model_spec.h"

#include <nlohmann/json_fwd.hpp>
#include <string>

namespace moeatlas {

// `source` names the file in error messages. Throws InputError for an unsupported model_type
// (listing the supported ones), a missing required field, or a value of the wrong type/range.
ModelSpec parseModelSpec(const nlohmann::json& config, const std::string& source);

} // namespace moeatlas
