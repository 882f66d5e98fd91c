// moeatlas demo-data / train: the embedded demo's synthetic corpus and BPE tokenizer, and the
// LibTorch trainer of the small Mixtral-architecture model (docs/demo-model.md).
#include "commands.h"
#include "request_flags.h"

#include "cli_progress.h"
#include "text/tokenizer.h"
#include "train/bpe_trainer.h"
#include "train/demo_corpus.h"
#include "train/moe_trainer.h"
#include "util/atomic_file.h"
#include "util/error.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>

namespace moeatlas::cli {

namespace {

struct DemoDataArgs {
    std::string output;
    DemoCorpusOptions corpus;
    BpeTrainerOptions bpe;
};

int runDemoData(const DemoDataArgs& a)
{
    const std::filesystem::path dir = a.output;
    const auto files = writeDemoCorpus(a.corpus, dir);
    for (const auto& f : files)
        std::printf("%s\n", f.c_str());
    std::vector<std::string> texts;
    for (const std::string& d : demoDomains())
        for (std::string& doc : readDemoDocuments(dir / "train" / (d + ".txt")))
            texts.push_back(std::move(doc));
    StopToken& stop = installStopHandler();
    ProgressBar bar("bpe", "merges");
    BpeVocabulary vocab;
    try {
        vocab = trainBpe(texts, a.bpe, [&](const Progress& p) { return bar.update(p) && !stop.stopRequested(); });
    } catch (const Cancelled&) {
        bar.finish("bpe interrupted: the corpus files are complete, no tokenizer was written");
        return 130;
    }
    bar.finish(
        "bpe: " + std::to_string(vocab.merges.size()) + " merges, vocabulary " + std::to_string(vocab.tokens.size()));
    writeBpeTokenizer(vocab, dir / "tokenizer");
    std::printf("%s\n", (dir / "tokenizer" / "tokenizer.json").c_str());
    return 0;
}

struct TrainArgs {
    std::string data;
    std::string output;
    std::string dtype = "bfloat16";
    std::string reportPath;
    TrainOptions train;
    bool force = false;
};

// Tokenized, shuffled (splitmix64 Fisher-Yates) and packed documents of every domain of a split.
std::vector<DomainSequences> loadSplit(
    const std::filesystem::path& dir, const Tokenizer& tok, int32_t bos, int64_t seqLen, uint64_t seed)
{
    std::vector<DomainSequences> out;
    for (const std::string& d : demoDomains()) {
        const auto path = dir / (d + ".txt");
        if (!std::filesystem::exists(path))
            continue;
        std::vector<std::vector<int32_t>> docs;
        for (const std::string& doc : readDemoDocuments(path))
            docs.push_back(tok.encode(doc, false));
        SplitMix64 rng(seed + 0x1234);
        for (std::size_t i = docs.size(); i > 1; --i)
            std::swap(docs[i - 1], docs[rng.below(i)]);
        DomainSequences ds { d, packDocuments(docs, bos, seqLen) };
        if (ds.sequences.empty())
            throw InputError(path.string() + ": fewer tokens than one sequence of " + std::to_string(seqLen));
        out.push_back(std::move(ds));
    }
    if (out.empty())
        throw InputError(dir.string() + ": no <domain>.txt files (arith, code, json, prose)");
    return out;
}

int runTrain(TrainArgs a)
{
    if (a.dtype != "bfloat16" && a.dtype != "float32")
        throw InputError("--dtype '" + a.dtype + "' (expected bfloat16 or float32)");
    a.train.saveDtype = a.dtype == "bfloat16" ? DType::BF16 : DType::F32;
    const std::filesystem::path data = a.data;
    const auto tokDir = data / "tokenizer";
    const Tokenizer tok = Tokenizer::fromFile((tokDir / "tokenizer.json").string());
    const auto bos = tok.bosTokenId();
    if (!bos)
        throw InputError((tokDir / "tokenizer_config.json").string() + ": no bos_token");
    a.train.model.vocabSize = tok.vocabSize();
    a.train.model.bosTokenId = *bos;
    a.train.model.eosTokenId = tok.eosTokenId().value_or(*bos);
    const auto train = loadSplit(data / "train", tok, *bos, a.train.seqLen, a.train.seed);
    const auto heldout = loadSplit(data / "heldout", tok, *bos, a.train.seqLen, a.train.seed);
    int64_t trainSeqs = 0;
    for (const auto& d : train)
        trainSeqs += static_cast<int64_t>(d.sequences.size());
    std::fprintf(stderr, "train: %lld sequences of %lld tokens in %zu domains, vocabulary %lld\n",
        static_cast<long long>(trainSeqs), static_cast<long long>(a.train.seqLen), train.size(),
        static_cast<long long>(a.train.model.vocabSize));

    StopToken& stop = installStopHandler();
    ProgressBar bar("train", "tok");
    TrainReport r;
    try {
        r = trainDemoModel(
            a.train, train, heldout, a.output, { tokDir / "tokenizer.json", tokDir / "tokenizer_config.json" }, a.force,
            [&](const Progress& p) { return bar.update(p); }, &stop);
    } catch (const Cancelled&) {
        bar.finish("train interrupted: nothing was written");
        return 130;
    }
    bar.finish("train: " + std::to_string(r.steps) + " steps, " + std::to_string(r.trainedTokens) + " tokens in "
        + formatDuration(r.seconds));
    nlohmann::ordered_json j;
    j["parameters"] = r.parameters;
    j["steps"] = r.steps;
    j["trained_tokens"] = r.trainedTokens;
    j["seconds"] = r.seconds;
    j["threads"] = a.train.threads;
    j["first_loss"] = r.firstLoss;
    j["final_train_loss"] = r.finalTrainLoss;
    j["final_aux_loss"] = r.finalAuxLoss;
    j["heldout_loss"] = r.heldoutLoss;
    j["unigram_loss"] = r.unigramLoss;
    std::printf("parameters %lld, %d steps, %.1f s\n", static_cast<long long>(r.parameters), r.steps, r.seconds);
    std::printf("loss (nats/token): first batch %.3f, final train %.3f, held-out %.3f, unigram %.3f\n", r.firstLoss,
        r.finalTrainLoss, r.heldoutLoss, r.unigramLoss);
    for (const DomainLoss& d : r.domains) {
        std::printf("  %-6s held-out %.3f  unigram %.3f  (%lld tokens)\n", d.domain.c_str(), d.loss, d.unigramLoss,
            static_cast<long long>(d.tokens));
        j["domains"][d.domain]
            = { { "heldout_loss", d.loss }, { "unigram_loss", d.unigramLoss }, { "tokens", d.tokens } };
    }
    if (!a.reportPath.empty())
        writeFileAtomically(a.reportPath, j.dump(2) + "\n");
    std::printf("%s\n", a.output.c_str());
    return 0;
}

} // namespace

Command addDemoDataCommand(CLI::App& app)
{
    auto a = std::make_shared<DemoDataArgs>();
    CLI::App* sub = app.add_subcommand(
        "demo-data", "Write the demo's synthetic corpus (4 domains, 3 splits) and train its BPE tokenizer");
    sub->add_option("--output,-o", a->output, "Directory to write")->required();
    sub->add_option("--seed", a->corpus.seed)->capture_default_str();
    sub->add_option("--train-docs", a->corpus.trainDocs, "Training documents per domain")->capture_default_str();
    sub->add_option("--calibration-docs", a->corpus.calibrationDocs, "Calibration documents per domain")
        ->capture_default_str();
    sub->add_option("--heldout-docs", a->corpus.heldoutDocs, "Held-out documents per domain")->capture_default_str();
    sub->add_option("--vocab-size", a->bpe.vocabSize, "Tokenizer vocabulary (256 bytes + specials + merges)")
        ->capture_default_str();
    return [a] { return runDemoData(*a); };
}

Command addTrainCommand(CLI::App& app)
{
    auto a = std::make_shared<TrainArgs>();
    TrainOptions& t = a->train;
    CLI::App* sub = app.add_subcommand("train", "Train the demo MoE (Mixtral architecture) on a demo-data directory");
    sub->add_option("--data", a->data, "Directory written by demo-data")->required();
    sub->add_option("--output,-o", a->output, "Model directory to create (HF layout)")->required();
    sub->add_option("--steps", t.steps)->capture_default_str();
    sub->add_option("--seed", t.seed)->capture_default_str();
    sub->add_option("--threads", t.threads, "Intra-op threads (1: bitwise reproducible)")->capture_default_str();
    sub->add_option("--batch", t.batchSequences, "Sequences per step")->capture_default_str();
    sub->add_option("--seq-len", t.seqLen)->capture_default_str();
    sub->add_option("--lr", t.learningRate, "Peak learning rate")->capture_default_str();
    sub->add_option("--warmup", t.warmupSteps)->capture_default_str();
    sub->add_option("--weight-decay", t.weightDecay)->capture_default_str();
    sub->add_option("--aux-coef", t.auxLossCoef, "Load-balancing loss coefficient")->capture_default_str();
    sub->add_option("--layers", t.model.numLayers)->capture_default_str();
    sub->add_option("--hidden", t.model.hiddenSize)->capture_default_str();
    sub->add_option("--heads", t.model.numHeads)->capture_default_str();
    sub->add_option("--kv-heads", t.model.numKvHeads)->capture_default_str();
    sub->add_option("--experts", t.model.numExperts)->capture_default_str();
    sub->add_option("--top-k", t.model.topK)->capture_default_str();
    sub->add_option("--expert-width", t.model.expertWidth)->capture_default_str();
    sub->add_option("--dtype", a->dtype, "Saved weights: bfloat16 or float32")->capture_default_str();
    sub->add_option("--report", a->reportPath, "Also write the losses and timing as JSON");
    sub->add_flag("--force", a->force, "Replace an existing output directory");
    return [a] { return namingFlags(kForceFlags, [&] { return runTrain(*a); }); };
}

} // namespace moeatlas::cli
