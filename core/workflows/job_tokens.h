// The tokens an evaluation or Fisher job runs on: held-out calibration sets (read and packed as
// capture reads them) or the atlas's own calibration tokens.
#pragma once

#include "eval/eval.h"
#include "runtime/capture.h"

#include <cstdint>

namespace moeatlas {

struct AtlasModel;

struct JobTokens {
    CalibrationInput heldout; // domains given: these sets; none: the atlas's calibration tokens
    // The atlas's tokens: the first maxSamplesPerDomain sequences of each domain (0: all).
    int64_t maxSamplesPerDomain = 0;
};

// Loads them for `model` (tokenizer, vocabulary). `atlas` may be null only when heldout has domains;
// otherwise InputError says to give domains or an atlas.
EvalTokens loadJobTokens(const JobTokens& request, const AtlasModel& model, const AtlasFile* atlas);

} // namespace moeatlas
