// The synthetic multi-domain corpus the embedded demo model is trained on: four domains
// with clearly different statistics (arithmetic, a toy programming language, JSON records, prose).
#pragma once

#include "util/splitmix64.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace moeatlas {

// The domain names, in their fixed order: arith, code, json, prose.
const std::vector<std::string>& demoDomains();

// One document of `domain` (no blank line inside, no trailing newline). Throws InputError for an
// unknown domain.
std::string generateDemoDocument(const std::string& domain, SplitMix64& rng);

struct DemoCorpusOptions {
    uint64_t seed = 1;
    int trainDocs = 2500; // per domain
    int calibrationDocs = 64; // per domain
    int heldoutDocs = 64; // per domain
};

const std::vector<std::string>& demoSplits(); // train, calibration, heldout

// Documents of every domain and split: docs[split][domain] in the orders above. Documents are unique
// within a domain across all splits (a duplicate draw is redrawn), so the splits are disjoint.
std::vector<std::vector<std::vector<std::string>>> generateDemoCorpus(const DemoCorpusOptions& options);

// Writes <dir>/<split>/<domain>.txt (documents separated by one blank line, final newline), each
// file atomically. Returns the files written.
std::vector<std::filesystem::path> writeDemoCorpus(const DemoCorpusOptions& options, const std::filesystem::path& dir);

// Splits a corpus file into its documents (blocks separated by blank lines), as capture reads them.
std::vector<std::string> readDemoDocuments(const std::filesystem::path& file);

} // namespace moeatlas
