// Trains the embedded demo model: a small Mixtral-architecture MoE (RMSNorm, RoPE, GQA causal
// attention, softmax router -> top-k -> renormalise, SwiGLU experts) with LibTorch autograd, a
// hand-written AdamW and warmup + cosine LR, saved in stock Hugging Face layout.
// Public API: no LibTorch types.
#pragma once

#include "checkpoint/dtype.h"
#include "util/progress.h"

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace moeatlas {

struct DemoModelConfig {
    int numLayers = 4;
    int64_t hiddenSize = 128;
    int numHeads = 4;
    int numKvHeads = 2;
    int numExperts = 16;
    int topK = 2;
    int64_t expertWidth = 128; // intermediate_size of each SwiGLU expert
    int64_t vocabSize = 512;
    double ropeTheta = 10000.0;
    double rmsNormEps = 1e-6;
    int64_t maxPositions = 4096;
    int bosTokenId = 256;
    int eosTokenId = 257;
    double initStd = 0.02; // normal init of every matrix (norm weights start at 1)
    double routerInitStd = 0.02;
    int64_t headDim() const { return hiddenSize / numHeads; }
};

// The config.json object (model_type mixtral, every field transformers needs).
std::string demoModelConfigJson(const DemoModelConfig& config, double auxLossCoef, DType dtype);

struct TrainOptions {
    DemoModelConfig model;
    int steps = 500;
    int batchSequences = 16;
    int64_t seqLen = 128;
    double learningRate = 4e-3; // peak
    double minLearningRateRatio = 0.1; // cosine decays to peak * this
    int warmupSteps = 30;
    double weightDecay = 0.1; // decoupled, matrices and embeddings only (not norm weights)
    double beta1 = 0.9;
    double beta2 = 0.95;
    double adamEps = 1e-8;
    double clipNorm = 1.0; // global gradient norm
    double auxLossCoef = 0.01; // Switch/Mixtral load-balancing loss
    uint64_t seed = 1;
    int threads = 1; // intra-op threads; 1 makes the run bitwise reproducible on one machine and LibTorch build
    DType saveDtype = DType::BF16; // F32 or BF16
    int heldoutSequences = 64; // per domain at most, for the final held-out loss
};

// Token sequences of one domain, each exactly seqLen long.
struct DomainSequences {
    std::string domain;
    std::vector<std::vector<int32_t>> sequences;
};

// Packs documents as capture does: BOS before each document (bos >= 0), concatenated in the
// given order, cut into sequences of seqLen, last partial piece dropped.
std::vector<std::vector<int32_t>> packDocuments(
    const std::vector<std::vector<int32_t>>& documents, int32_t bos, int64_t seqLen);

struct DomainLoss {
    std::string domain;
    double loss = 0.0; // nats per predicted token
    double unigramLoss = 0.0; // the train-split unigram model (add-one) on the same tokens
    int64_t tokens = 0; // predicted tokens
};

struct TrainReport {
    double seconds = 0.0;
    int64_t trainedTokens = 0;
    int steps = 0;
    double firstLoss = 0.0; // cross-entropy of the first batch
    double finalTrainLoss = 0.0; // mean cross-entropy over the last 50 steps
    double finalAuxLoss = 0.0; // mean load-balancing loss over the last 50 steps (top_k at balance)
    double heldoutLoss = 0.0; // all domains, weights as saved
    double unigramLoss = 0.0; // unigram baseline on the same held-out tokens
    std::vector<DomainLoss> domains;
    int64_t parameters = 0;
};

// Trains on `train` (sequences of all domains mixed; each step draws batchSequences of them),
// measures `heldout`, and writes config.json, generation_config.json and model.safetensors plus
// the files in `extraFiles` (tokenizer.json ...) to `outDir` through "<outDir>.partial" + rename.
// progress: units are trained tokens, stage carries the step and loss; false or a stop request
// throws Cancelled and leaves no output.
TrainReport trainDemoModel(const TrainOptions& options, const std::vector<DomainSequences>& train,
    const std::vector<DomainSequences>& heldout, const std::filesystem::path& outDir,
    const std::vector<std::filesystem::path>& extraFiles, bool overwrite, const ProgressFn& progress = {},
    const StopToken* stop = nullptr);

// Writes the randomly initialised model (seeded) without training, in F32 (tests).
void writeInitialDemoModel(const DemoModelConfig& config, uint64_t seed, const std::filesystem::path& outDir);

// The trainer's own forward pass on a saved demo checkpoint: logits [T, V] for sequences of
// `seqLen` tokens packed in `tokens` (T a multiple of seqLen). For parity tests with the engine.
std::vector<float> demoModelLogits(
    const std::filesystem::path& modelDir, std::span<const int32_t> tokens, int64_t seqLen);

// The Switch/Mixtral load-balancing loss as transformers' load_balancing_loss_func computes it:
// routerLogits [N, E] (all layers stacked), softmax, top-k; E * sum_{k,e} f[k,e] * P[e] where
// f[k,e] is the fraction of tokens whose k-th choice is e and P[e] the mean router probability.
double loadBalancingLoss(std::span<const float> routerLogits, int64_t numExperts, int topK);

} // namespace moeatlas
