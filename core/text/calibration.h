// Domain-labelled calibration data: reading a domain's source file and packing its documents
// into fixed-length token sequences. Sequences never mix domains.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moeatlas {

// "--domain NAME=PATH[:N]" parsed: N caps the number of packed sequences of this domain.
struct DomainSource {
    std::string name;
    std::string path;
    std::optional<int64_t> maxSamples;
};

// Parses "NAME=PATH[:N]"; throws InputError naming the argument when malformed.
DomainSource parseDomainArgument(const std::string& arg);

struct PackingOptions {
    int64_t seqLen = 512;
    std::optional<int64_t> maxSamplesPerDomain;   // global cap, the per-domain :N wins
    uint64_t seed = 0;                            // order of documents before packing
    std::optional<int32_t> bosToken;              // prepended to every document when set
    bool dropRemainder = true;                    // a last, short sequence is dropped
};

struct PackedDomain {
    std::string name;
    std::string source;
    std::string format;                           // "input_ids-jsonl", ...
    int64_t numDocuments = 0;
    std::vector<std::vector<int32_t>> sequences;  // each exactly seqLen tokens
};

struct CalibrationSet {
    std::vector<PackedDomain> domains;
    PackingOptions packing;
    int64_t totalTokens() const;
    // Human-readable description of the packing choices, recorded in the atlas provenance.
    std::string describePacking() const;
};

// Documents of a JSONL file whose lines are objects with an "input_ids" array of integers.
// Throws InputError naming file and line for: unreadable file, invalid JSON, missing or
// non-integer "input_ids", ids outside [0, vocabSize) when vocabSize > 0, and a file with no documents.
std::vector<std::vector<int32_t>> readInputIdsJsonl(const std::string& path, int64_t vocabSize);

// Packs documents into sequences of exactly seqLen tokens (documents concatenated in an order
// shuffled by seed, optional BOS per document). Deterministic for a given seed.
std::vector<std::vector<int32_t>> packDocuments(std::vector<std::vector<int32_t>> documents,
                                                const PackingOptions& options,
                                                std::optional<int64_t> maxSequences);

} // namespace moeatlas
