// Core errors name the request field at fault (RequestError::field); the CLI names its flag.
#pragma once

#include "util/error.h"

#include <initializer_list>
#include <map>
#include <string>
#include <utility>

namespace moeatlas::cli {

// How the CLI speaks of one request field: the flag that sets it, put in front of the message
// ("--batch-tokens: ..."), and/or a hint in the CLI's words put after it ("(use --force to replace
// it)"), for fields whose remedy is a flag the user did not give.
struct FieldFlag {
    FieldFlag(std::string flag, std::string hint = {})
        : flag(std::move(flag))
        , hint(std::move(hint))
    {
    }
    FieldFlag(const char* flag)
        : flag(flag)
    {
    }
    std::string flag;
    std::string hint;
};

using FieldFlags = std::map<std::string, FieldFlag>;

// The maps' union; a later map's entry replaces an earlier one's.
inline FieldFlags fieldFlags(std::initializer_list<const FieldFlags*> maps)
{
    FieldFlags out;
    for (const FieldFlags* m : maps)
        for (const auto& [field, flag] : *m)
            out.insert_or_assign(field, flag);
    return out;
}

// ExecutorOptions: the fields of capture's and eval's --device, --dtype, --batch-tokens and memory plan.
inline const FieldFlags kExecutorFlags { { "device", "--device" }, { "computeDtype", "--dtype" },
    { "batchTokens", "--batch-tokens" },
    { "memoryBudgetBytes", { "", "lower --max-samples, --seq-len or --batch-tokens" } } };

// CalibrationInput (app/calibration_args.h): --domain, packing and text options.
inline const FieldFlags kCalibrationFlags { { "domains", "--domain" }, { "seqLen", "--seq-len" },
    { "tokenizer", { "", "--tokenizer PATH" } }, { "addBos", { "", "--tokenizer PATH or --bos ID" } },
    { "bosToken", { "", "--bos ID" } }, { "textField", "--text-field" }, { "chatTemplate", "--chat-template" },
    { "chatKwargs", "--chat-arg" } };

// An output that exists and is kept unless the command's --force says otherwise (CaptureParams::overwrite,
// ExportOptions::force, trainDemoModel's overwrite).
inline const FieldFlags kForceFlags { { "overwrite", { "", "use --force to replace it" } },
    { "force", { "", "use --force to replace it" } } };

// The message of a RequestError as the CLI says it, or the error's own text when `flags` has no
// entry for its field.
inline std::string withFlag(const FieldFlags& flags, const RequestError& e)
{
    const auto it = flags.find(e.field());
    if (it == flags.end())
        return e.what();
    const FieldFlag& f = it->second;
    return (f.flag.empty() ? std::string() : f.flag + ": ") + e.what() + (f.hint.empty() ? "" : " (" + f.hint + ")");
}

// Runs f(); a RequestError whose field is a key of `flags` is rethrown as an InputError that starts
// with the flag ("--ablation-domain: ...") and/or ends with its hint; other errors pass unchanged.
template <class F> decltype(auto) namingFlags(const FieldFlags& flags, F&& f)
{
    try {
        return std::forward<F>(f)();
    } catch (const RequestError& e) {
        if (!flags.count(e.field()))
            throw;
        throw InputError(withFlag(flags, e));
    }
}

} // namespace moeatlas::cli
