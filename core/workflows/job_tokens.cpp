#include "workflows/job_tokens.h"

#include "util/error.h"
#include "workflows/atlas_model.h"

namespace moeatlas {

EvalTokens loadJobTokens(const JobTokens& request, const AtlasModel& model, const AtlasFile* atlas)
{
    if (!request.heldout.domains.empty())
        return evalTokensFromCalibration(
            loadCalibration(request.heldout, model.checkpoint.dir(), model.spec.vocabSize));
    if (!atlas)
        throw InputError("no tokens to run on: give domain sets or an atlas whose calibration tokens to use");
    return firstSequencesPerDomain(evalTokensFromAtlas(*atlas), request.maxSamplesPerDomain);
}

} // namespace moeatlas
