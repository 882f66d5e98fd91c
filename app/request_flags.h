// Core errors name the request field at fault (RequestError::field); the CLI names its flag.
#pragma once

#include "util/error.h"

#include <map>
#include <string>
#include <utility>

namespace moeatlas::cli {

// Runs f(); a RequestError whose field is a key of `flags` is rethrown as an InputError that starts
// with the flag ("--ablation-domain: ..."); other errors pass unchanged.
template <class F> decltype(auto) namingFlags(const std::map<std::string, std::string>& flags, F&& f)
{
    try {
        return std::forward<F>(f)();
    } catch (const RequestError& e) {
        const auto it = flags.find(e.field());
        if (it == flags.end())
            throw;
        throw InputError(it->second + ": " + e.what());
    }
}

} // namespace moeatlas::cli
