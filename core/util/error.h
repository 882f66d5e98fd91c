// Errors that reach the user. Every message names the file, the field and what was expected,
// so the CLI can print it verbatim and exit non-zero.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace moeatlas {

// Base class of every error the engine reports to a user.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Input that is malformed or unsupported (a file, a config field, a tensor, a flag).
class InputError : public Error {
public:
    using Error::Error;
};

// Input that one field of a job request (core/workflows) got wrong. field() names it as the request
// struct does ("ablate", "ablationTokens", "options.chunkTokens" ...), so that each client can name
// its own control for it: the CLI its flag, the workbench its widget. The message names the value
// and what was expected, and no flag.
class RequestError : public InputError {
public:
    RequestError(std::string field, const std::string& message)
        : InputError(message)
        , m_field(std::move(field))
    {
    }
    const std::string& field() const noexcept { return m_field; }

private:
    std::string m_field;
};

// Work stopped because the caller asked it to (Ctrl-C, a Cancel button).
class Cancelled : public Error {
public:
    Cancelled()
        : Error("cancelled")
    {
    }
};

} // namespace moeatlas
