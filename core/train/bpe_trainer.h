// Byte-level BPE tokenizer training for the demo model: GPT-2's ByteLevel pre-tokenizer (regex and
// byte-to-unicode table), merges learned by pair frequency, written as a Hugging Face tokenizer.json
// that both our Tokenizer and HF `tokenizers` load and encode identically.
#pragma once

#include "util/progress.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace moeatlas {

struct BpeTrainerOptions {
    int vocabSize = 512; // 256 bytes + special tokens + merges
    std::vector<std::string> specialTokens = { "<|bos|>", "<|eos|>" }; // ids 256, 257, ...
    int minPairCount = 2; // training stops early when no pair is this frequent
};

struct BpeVocabulary {
    std::vector<std::string> tokens; // id -> token (byte-level characters; special tokens verbatim)
    std::vector<std::pair<std::string, std::string>> merges; // in rank order
    std::vector<std::string> specialTokens;
};

// Learns merges on `texts` (each pre-tokenized on its own). The most frequent pair is merged next;
// ties go to the pair whose (left, right) strings sort first, so the result is deterministic.
BpeVocabulary trainBpe(
    const std::vector<std::string>& texts, const BpeTrainerOptions& options = {}, const ProgressFn& progress = {});

// The tokenizer.json text (ByteLevel pre-tokenizer and decoder, BPE model, special tokens as added
// tokens, no post-processor) and the tokenizer_config.json naming BOS/EOS (first two special tokens).
std::string bpeTokenizerJson(const BpeVocabulary& vocab);
std::string bpeTokenizerConfigJson(const BpeVocabulary& vocab);

// Writes <dir>/tokenizer.json and <dir>/tokenizer_config.json atomically.
void writeBpeTokenizer(const BpeVocabulary& vocab, const std::filesystem::path& dir);

} // namespace moeatlas
