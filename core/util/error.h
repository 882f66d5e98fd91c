// Errors that reach the user. Every message names the file, the field and what was expected,
// so the CLI can print it verbatim and exit non-zero.
#pragma once

#include <stdexcept>
#include <string>

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

// Work stopped because the caller asked it to (Ctrl-C, a Cancel button).
class Cancelled : public Error {
public:
    Cancelled()
        : Error("cancelled")
    {
    }
};

} // namespace moeatlas
