// Learned next-layer expert estimators (issue 17; docs/methods.md, "Learned estimators"): a linear and
// a one-hidden-layer MLP predictor of the experts MoE layer l + d routes a token to, from layer l's MoE
// input. Trained with LibTorch (autograd + a hand-written Adam) on the training split of the
// calibration tokens, evaluated on the held-out split. Multi-label: multi-hot targets, binary
// cross-entropy with logits. Engine-internal (at::Tensor in the API).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moeatlas {

struct AtlasLearnedEstimator;
class StopToken;

enum class EstimatorKind { Linear, Mlp };

// "linear", "mlp".
std::string estimatorKindName(EstimatorKind kind);

struct EstimatorOptions {
    EstimatorKind kind = EstimatorKind::Linear;
    int hiddenUnits = 0; // MLP width; 0 = min(2 * numExperts, 256)
    int epochs = 4; // passes over the (sub-sampled) training tokens
    double learningRate = 0.0; // Adam, constant; 0 = 0.1 / sqrt(H)
    int batchSize = 512;
    double weightDecay = 1e-4; // decoupled (AdamW style), weight matrices only
    uint64_t seed = 1; // initialisation, sub-sample and batch order
    int64_t maxTrainTokens = 16384; // training tokens used at most (a seeded sub-sample); 0 = all
    int threads = 0; // BLAS threads of the GEMMs (ATen runs single-threaded meanwhile); 0 = ATen's count
};

// A trained estimator: logits = f((x - featureMean) / featureStd), with
//   linear: f(z) = z W^T + b                                     W [E, H], b [E]
//   mlp:    f(z) = relu(z W1^T + b1) W2^T + b2                   W1 [U, H], b1 [U], W2 [E, U], b2 [E]
// Parameters are float32 tensors on the device the features were given on.
struct TrainedEstimator {
    EstimatorKind kind = EstimatorKind::Linear;
    at::Tensor featureMean; // [H]
    at::Tensor featureStd; // [H], floored at kMinFeatureStd
    at::Tensor weight, bias; // linear: W, b; mlp: W1, b1
    at::Tensor outWeight, outBias; // mlp only: W2, b2
    double trainLoss = 0.0; // mean BCE per token (summed over experts) on the tokens trained on
    double heldoutLoss = 0.0; // the same on the held-out tokens (NaN when there are none)
    int64_t epochs = 0;
    int64_t trainTokens = 0; // tokens trained on (after the sub-sample)
    int64_t heldoutTokens = 0;
    EstimatorOptions options; // as trained, hiddenUnits and learningRate resolved (stored with the parameters)

    int64_t inputSize() const; // H
    int64_t numExperts() const; // E
    // Named parameters in storage order: feature_mean, feature_std, then weight, bias (linear) or
    // hidden_weight, hidden_bias, output_weight, output_bias (mlp).
    std::vector<std::pair<std::string, at::Tensor>> namedParameters() const;
};

inline constexpr double kMinFeatureStd = 1e-6;

// Trains one estimator. features [N, H] floating (converted to float32), targets [N, k] integral
// (routed expert ids in [0, numExperts), one row per token), trainMask [N] bool (true: training
// split). Deterministic for a given seed, thread count and device. RequestError("features" /
// "targets" / "trainMask" / "options.*") on bad input; Cancelled when stop is requested.
TrainedEstimator trainEstimator(const at::Tensor& features, const at::Tensor& targets, int numExperts,
    const at::Tensor& trainMask, const EstimatorOptions& options, const StopToken* stop = nullptr);

// Raw logits [N, E] (float32), no gradient.
at::Tensor estimatorLogits(const TrainedEstimator& model, const at::Tensor& features);

// The `budget` experts with the largest logits per token, best first (ties towards the lower id):
// [N, budget] int32 on the CPU. 1 <= budget <= E (RequestError "budget").
at::Tensor predictTopB(const TrainedEstimator& model, const at::Tensor& features, int budget);

// The training loss: mean over the N tokens of sum_e [softplus(z_e) - y_e z_e] (multi-hot y of the
// targets), and its gradient with respect to each named parameter but the standardisation (the
// names of namedParameters()). Weight decay is not part of it (decoupled).
struct EstimatorLossGradient {
    double loss = 0.0;
    std::vector<std::pair<std::string, at::Tensor>> gradients;
};
EstimatorLossGradient estimatorLossAndGradient(
    const TrainedEstimator& model, const at::Tensor& features, const at::Tensor& targets);

// Mean loss (as above) over the rows of `features` selected by `mask` ([N] bool; undefined: all rows);
// NaN when none is selected. No gradient; evaluated in chunks.
double estimatorLoss(
    const TrainedEstimator& model, const at::Tensor& features, const at::Tensor& targets, const at::Tensor& mask);

// To and from the atlas form (/prefetch/learned/<predictor>/<layer>/d<d>): named float arrays plus
// losses, epochs and training tokens. fromAtlas checks the names and shapes (InputError naming
// `where`, e.g. the atlas group) and gives a CPU model whose predictions equal the original's.
AtlasLearnedEstimator toAtlas(const TrainedEstimator& model);
TrainedEstimator fromAtlas(const AtlasLearnedEstimator& stored, EstimatorKind kind, const std::string& where);

} // namespace moeatlas
