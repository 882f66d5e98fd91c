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
    std::string chatTemplate = "auto";
    bool addGenerationPrompt = false;
    std::vector<std::string> chatArgs; // NAME=VALUE
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
    sub->add_option("--chat-template", a.chatTemplate,
           "How \"messages\" records are rendered: auto (the model's chat template when it has one, else "
           "\"role: content\" lines), none (those lines), the NAME of one of the model's templates, or a .jinja FILE")
        ->capture_default_str();
    sub->add_flag("--add-generation-prompt", a.addGenerationPrompt,
        "End every rendered conversation with the assistant's prompt (apply_chat_template's add_generation_prompt)");
    sub->add_option("--chat-arg", a.chatArgs,
        "NAME=VALUE: a variable for the chat template, as apply_chat_template's keyword arguments "
        "(enable_thinking=false, reasoning_effort=high); VALUE is read as JSON, else as a string; repeatable");
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
    p.text.chatTemplate = a.chatTemplate;
    p.text.addGenerationPrompt = a.addGenerationPrompt;
    for (const std::string& arg : a.chatArgs) {
        const auto eq = arg.find('=');
        if (eq == std::string::npos || eq == 0)
            throw InputError("--chat-arg " + arg + ": expected NAME=VALUE (e.g. enable_thinking=false)");
        p.text.chatKwargs.emplace_back(arg.substr(0, eq), arg.substr(eq + 1));
    }
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
