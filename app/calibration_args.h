// The calibration-data options shared by `capture`, `eval` and `fisher` (--domain, packing, text reading):
// one registration and one translation into CaptureParams, so both commands read data the same way.
#pragma once

#include "runtime/capture.h"
#include "util/error.h"
#include "workflows/job_tokens.h"

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace moeatlas::cli {

struct CalibrationArgs {
    std::vector<std::string> domains; // NAME=PATH[:N]
    int64_t seqLen = 512;
    int64_t maxSamples = 0;
    uint64_t seed = 0;
    int bos = -1;
    bool addBos = false;
    std::string tokenizer;
    std::string textField = "text";
    bool wholeFile = false;
};

// Registers the options; `domainHelp` describes what the domains are for in this command.
inline CLI::Option* addCalibrationOptions(CLI::App* sub, CalibrationArgs& a, const std::string& domainHelp)
{
    CLI::Option* domain = sub->add_option("--domain,-d", a.domains,
        domainHelp
            + ": NAME=PATH[:N], a text file, directory of .txt files, or JSONL with a text field, \"messages\" or "
              "\"input_ids\" (docs/calibration.md); N caps its sequences; repeatable");
    sub->add_option("--seq-len", a.seqLen, "Tokens per packed sequence")->capture_default_str();
    sub->add_option("--max-samples", a.maxSamples, "Sequences per domain at most (0 = all)");
    sub->add_option("--seed", a.seed, "Seed for document order (and hidden-state samples, random plans)")
        ->capture_default_str();
    sub->add_option("--bos", a.bos, "Token id prepended to every document");
    sub->add_flag("--add-bos", a.addBos, "Prepend the tokenizer's BOS token to every document (--bos wins)");
    sub->add_option(
        "--tokenizer", a.tokenizer, "tokenizer.json for text domains (default: <checkpoint>/tokenizer.json)");
    sub->add_option("--text-field", a.textField, "Field of JSONL records holding the text")->capture_default_str();
    sub->add_flag(
        "--whole-file", a.wholeFile, "A plain text file is one document (default: one per blank-line-separated block)");
    return domain;
}

// Fills the calibration input (domains, packing, text options, tokenizer, BOS).
inline void applyCalibrationArgs(const CalibrationArgs& a, CalibrationInput& p)
{
    for (const std::string& d : a.domains)
        p.domains.push_back(parseDomainArgument(d));
    p.packing.seqLen = a.seqLen;
    if (a.maxSamples > 0)
        p.packing.maxSamplesPerDomain = a.maxSamples;
    p.packing.seed = a.seed;
    if (a.bos >= 0)
        p.packing.bosToken = a.bos;
    p.addBos = a.addBos;
    p.tokenizer = a.tokenizer;
    if (a.textField.empty())
        throw InputError("--text-field: the field name is empty");
    p.text.textField = a.textField;
    p.text.wholeFile = a.wholeFile;
}

// The tokens a command runs on: the --domain sets when given, else the atlas's calibration tokens
// (the first --max-samples sequences of each domain).
inline JobTokens jobTokens(const CalibrationArgs& a)
{
    JobTokens t;
    if (!a.domains.empty())
        applyCalibrationArgs(a, t.heldout);
    t.maxSamplesPerDomain = a.maxSamples;
    return t;
}

} // namespace moeatlas::cli
