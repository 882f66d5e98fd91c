// Up-front checks of an offload simulation: the trace, the predictions, the cost model and the
// configuration agree (RequestError naming the field otherwise). Private to core/sim.
#pragma once

#include "sim/simulator.h"

namespace moeatlas {

void validateSimulation(const RoutingTrace& trace, std::span<const PredictionSet> predictions,
    const ComputeModel& compute, const SimConfig& config);

} // namespace moeatlas
