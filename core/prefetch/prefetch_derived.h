// The derived prefetch predictors (docs/methods.md, "Expert prefetching"): computed from the recorded
// routing alone, never stored. Plain C++ on a RoutingTrace (prefetch_data.h).
#pragma once

#include "prefetch/prefetch_data.h"

#include <cstdint>
#include <vector>

namespace moeatlas {

// Throws RequestError("source") when `source` is not an index into trace.moeLayers, RequestError("lookahead")
// when lookahead < 1 or source + lookahead is beyond the last MoE layer (naming the layers), and
// RequestError("budget") when budget lies outside [k, E].
void checkPrediction(const RoutingTrace& trace, int source, int lookahead, int budget);

// Every expert of MoE layer `layer` (index into moeLayers) ranked by how many training tokens (tokens of
// sequences with trainSequences = 1) were routed to it there, most first, ties by the lower id ([E]).
std::vector<int32_t> frequencyOrder(const RoutingTrace& trace, int layer);

// The predictions of a derived predictor for MoE layer source + lookahead, `budget` experts per token:
// - Frequency: the first `budget` of frequencyOrder(target), the same row for every token;
// - Previous: the experts the same sequence's previous token was routed to at the target layer, in
//   slot order, then frequencyOrder(target) without them; a sequence's first token has no previous
//   token and gets the frequency row;
// - Oracle: the token's own experts at the target layer in slot order, then frequencyOrder(target).
// RequestError("predictor") for a recorded predictor (prefetch_atlas.h reads those), and the errors of
// checkPrediction. RoutingTrace::trainSequences must have one entry per sequence (InputError otherwise).
PredictionSet derivedPredictions(const RoutingTrace& trace, Predictor predictor, int source, int lookahead, int budget);

} // namespace moeatlas
